"""Two processes on localhost (4 simulated CPU devices each, gloo collectives)
train the tiny demo through the CLI exactly like one process with 8 devices.

Covers `jax.distributed` start-up from flags, per-process data reading
(each process assembles only its rows of the global batch), global batches
from process-local data, the sharded loss across processes, parallel
evaluation, logs written by process 0 only, and orbax checkpoints written
collectively.
"""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from itr_jax.training import checkpointing
from itr_jax.training import reporting
from itr_jax.training import trainer
from tiny_config import cli_flags
from tiny_config import tiny_config

NUM_PROCESSES, DEVICES_PER_PROCESS, EPOCHS, STEPS = 2, 4, 1, 10


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def restore_on_one_device(workdir, step, like):
  """The state saved at `step` (by any number of processes) on device 0."""
  device = jax.sharding.make_single_device_sharding(jax.devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), like)
  ckpt = checkpointing.Checkpoints(workdir)
  state = ckpt.manager.restore(step, args=ocp.args.StandardRestore(abstract))
  ckpt.close()
  return state


def start_processes(data_dir, workdir):
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"}
  command = [sys.executable, "-m", "itr_jax.train",
             *cli_flags(data_dir, num_epochs=EPOCHS), f"--workdir={workdir}",
             f"--coordinator_address=localhost:{free_port()}",
             f"--num_processes={NUM_PROCESSES}"]
  return [subprocess.Popen(command + [f"--process_id={i}"], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
          for i in range(NUM_PROCESSES)]


def test_two_processes_train_like_one_process(tmp_path):
  assert jax.device_count() == NUM_PROCESSES * DEVICES_PER_PROCESS
  multi_dir = str(tmp_path / "two_processes")
  processes = start_processes(str(tmp_path / "data"), multi_dir)
  try:
    # Meanwhile, the reference: one process with all 8 devices (own data copy,
    # generated from the same seed).
    single_dir = str(tmp_path / "one_process")
    trainer.train_and_evaluate(
        tiny_config(str(tmp_path / "data_single"), num_epochs=EPOCHS), single_dir)
    outputs = [p.communicate(timeout=300)[0] for p in processes]
  finally:
    for p in processes:
      p.kill()
  for i, (p, out) in enumerate(zip(processes, outputs)):
    assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"

  ckpt = checkpointing.Checkpoints(single_dir)
  single = ckpt.manager.restore(STEPS)  # params, opt_state, step
  ckpt.close()
  multi = restore_on_one_device(multi_dir, STEPS, single)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(multi)[0],
                          jax.tree.leaves(single)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0,
                               err_msg=jax.tree_util.keystr(path))

  # One log line per record: only process 0 wrote, and it matches the reference.
  records = reporting.read_metrics(multi_dir)
  reference = reporting.read_metrics(single_dir)
  assert [(r["kind"], r["step"]) for r in records] == [
      (r["kind"], r["step"]) for r in reference]
  for r, ref in zip(records, reference):
    for key in ("loss", "ndcg_i2t", "ndcg_t2i", "rsum"):
      if key in ref:
        np.testing.assert_allclose(r[key], ref[key], atol=1e-4, err_msg=f"{key} {r}")
  saved = os.listdir(os.path.join(multi_dir, "checkpoints"))
  assert sorted(int(d) for d in saved if d.isdigit()) == [7, 10]
