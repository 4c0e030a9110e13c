r"""Cost of checkpoint integrity records: save, record, verify, restore.

Saves a train state of --mib MiB of float32 parameters plus Adam state
(3x the parameters in memory; the zero Adam moments compress to almost
nothing on disk) with `checkpointing.Checkpoints`, timing the orbax
save, the integrity record (SHA-256 of every file) and the verification done
before every resume, and prints a table. The paper's VSE++ state is about
100 MiB (~8.7M parameters x 3).

  python benchmarks/checkpoint_integrity.py --mib=33,133
"""
import argparse
import os
import shutil
import tempfile
import time

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from itr_jax.training import checkpointing
from itr_jax.training import integrity


def measure(param_mib: int, directory: str, repeats: int = 3) -> dict:
  n = param_mib * 2**20 // 4
  params = {"w": jax.random.normal(jax.random.PRNGKey(0), (n,), jnp.float32)}
  state = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=optax.adam(1e-3))
  abstract = jax.eval_shape(lambda: state)
  times = {"save": [], "record": [], "verify": [], "restore": []}
  for r in range(repeats):
    workdir = os.path.join(directory, str(r))
    ckpt = checkpointing.Checkpoints(workdir, keep=1)
    t0 = time.perf_counter()
    ckpt.manager.save(1, args=checkpointing.ocp.args.StandardSave(state), force=True)
    ckpt.manager.wait_until_finished()
    t1 = time.perf_counter()
    integrity.write_record(os.path.join(ckpt.directory, "1"))
    t2 = time.perf_counter()
    assert integrity.verify(os.path.join(ckpt.directory, "1")) is None
    t3 = time.perf_counter()
    jax.block_until_ready(ckpt.restore(1, abstract))
    t4 = time.perf_counter()
    ckpt.close()
    for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
      times[key].append(dt)
    size = integrity.tree_bytes(os.path.join(ckpt.directory, "1"))
    shutil.rmtree(workdir)
  return {"size_mib": size / 2**20, **{k: sorted(v)[len(v) // 2] for k, v in times.items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--mib", default="33,133",
                      help="comma-separated parameter sizes in MiB")
  parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
  args = parser.parse_args()
  directory = args.dir or tempfile.mkdtemp(prefix="ckpt_integrity_")
  print("| params MiB | checkpoint MiB | orbax save s | + integrity record s | "
        "verify s | restore s | record+verify / save |")
  print("|---:|---:|---:|---:|---:|---:|---:|")
  for mib in (int(m) for m in args.mib.split(",")):
    m = measure(mib, directory)
    print(f"| {mib} | {m['size_mib']:.0f} | {m['save']:.2f} | {m['record']:.2f} | "
          f"{m['verify']:.2f} | {m['restore']:.2f} | "
          f"{(m['record'] + m['verify']) / m['save']:.2f} |")


if __name__ == "__main__":
  main()
