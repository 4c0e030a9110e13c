"""Per-device memory and step time of the sharded train step, by batch and mesh size.

The real `make_train_step` (both encoders, RSC, triplet + S-NDCG with
global-batch semantics, Adam) compiled for meshes of 1, 2, 4 and 8 simulated
CPU devices (`--xla_force_host_platform_device_count=8`, set below before JAX
starts) with the state replicated (or FSDP-sharded with `--fsdp`) and the
batch split over "data".

* Memory figures come from XLA's memory analysis of the compiled SPMD
  program: one device's arguments, outputs and temporaries. They are what a
  device would need on real hardware, so they are meaningful here.
* Step times are wall-clock on simulated devices that share this machine's
  CPU cores: the total work is the same for every mesh size (it is only split
  up), so the times are indicative at best; they show the overhead of the
  collectives, not a speed-up. Batches above `--max_timed_batch` are compiled
  and measured for memory only (a B = 8192 step takes minutes on 2 cores).

The model is small (the demo's: 12 regions x 128 features, 64-d words, GRU
and joint space 256) so that B = 8192 batches fit in host memory; the loss,
whose per-device share is what sharding divides, does not depend on it.

  python benchmarks/sharded_train_step.py
  python benchmarks/sharded_train_step.py --batch_sizes=512 --devices=1,8 --fsdp
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from itr_jax import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import defaults  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import optimizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import train_step as train_step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

MIB = 2.0**20


def batch_shapes(batch_size: int, args) -> dict:
  """Shapes and dtypes of a pipeline batch."""
  b = batch_size
  return {
      "images": ((b, args.regions, args.img_dim), jnp.float32),
      "tokens": ((b, args.max_len), jnp.int32),
      "lengths": ((b,), jnp.int32),
      "image_caption_emb": ((b, 5, args.text_emb_dim), jnp.float32),
      "caption_emb": ((b, args.text_emb_dim), jnp.float32),
  }


def random_batch(batch_size: int, args) -> dict:
  rng = np.random.default_rng(0)
  lengths = rng.integers(8, args.max_len + 1, batch_size).astype(np.int32)
  tokens = rng.integers(1, args.vocab_size, (batch_size, args.max_len))
  tokens = np.where(np.arange(args.max_len)[None] < lengths[:, None], tokens, 0)
  out = {}
  for key, (shape, dtype) in batch_shapes(batch_size, args).items():
    out[key] = rng.standard_normal(shape).astype(np.float32)
  out["tokens"], out["lengths"] = tokens.astype(np.int32), lengths
  return out


def setup(args):
  config = defaults.base_config()
  config.model.update(vocab_size=args.vocab_size, word_dim=args.word_dim,
                      embed_size=args.embed_size)
  model = models.create_model(config.model)
  tx = optimizer.create_optimizer(config.optim, steps_per_epoch=1000)

  def init():
    params = model.init(jax.random.key(0), jnp.zeros((1, args.regions, args.img_dim)),
                        jnp.zeros((1, args.max_len), jnp.int32),
                        jnp.full((1,), 2, jnp.int32))["params"]
    return train_step_lib.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  return config, model, init


def bench(batch_size: int, num_devices: int, args, config, model, init) -> dict:
  mesh = sharding.create_mesh([("data", -1)], devices=jax.devices()[:num_devices])
  abstract_state = jax.eval_shape(init)
  rules = config.sharding
  if args.fsdp:
    rules.rules = sharding.FSDP_RULES
  state_sharding = sharding.state_shardings(abstract_state, mesh, rules)
  step = train_step_lib.make_train_step(model, losses.LossOptions.from_config(config.loss),
                                        mesh=mesh,
                                        state_sharding=state_sharding)
  rows = sharding.batch_sharding(mesh)
  abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=rows)
                    for k, (shape, dtype) in batch_shapes(batch_size, args).items()}
  start = time.perf_counter()
  compiled = step.lower(sharding.with_shardings(abstract_state, state_sharding),
                        abstract_batch).compile()
  result = {"compile_s": time.perf_counter() - start,
            **sharding.memory_stats(compiled)}
  if batch_size <= args.max_timed_batch:
    state = jax.jit(init, out_shardings=state_sharding)()
    batch = sharding.global_batch(random_batch(batch_size, args), mesh)
    times = []
    for _ in range(args.steps + 1):  # the first call is a warm-up
      start = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
    result["step_s"] = statistics.median(times[1:])
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_sizes", default="512,2048,8192")
  parser.add_argument("--devices", default="1,2,4,8")
  parser.add_argument("--steps", type=int, default=2, help="timed steps per cell")
  parser.add_argument("--max_timed_batch", type=int, default=2048)
  parser.add_argument("--fsdp", action="store_true",
                      help="FSDP-shard the state (sharding.FSDP_RULES)")
  parser.add_argument("--regions", type=int, default=12)
  parser.add_argument("--img_dim", type=int, default=128)
  parser.add_argument("--max_len", type=int, default=24)
  parser.add_argument("--vocab_size", type=int, default=2000)
  parser.add_argument("--word_dim", type=int, default=64)
  parser.add_argument("--embed_size", type=int, default=256)
  parser.add_argument("--text_emb_dim", type=int, default=256)
  args = parser.parse_args()
  config, model, init = setup(args)
  print(f"{jax.device_count()} simulated {jax.devices()[0].platform.upper()} "
        f"devices; state {'FSDP-sharded' if args.fsdp else 'replicated'}; loss "
        f"chunk {losses.DEFAULT_CHUNK_SIZE}; small model (see --help).")
  print("Memory = XLA memory analysis per device (meaningful on CPU); step "
        "time = wall clock on simulated devices sharing the host cores "
        "(indicative only).\n")
  header = ("| global B | devices | B/device | peak MiB/device | temp MiB | "
            "args MiB | compile s | step s |")
  print(header)
  print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|")
  for b in (int(x) for x in args.batch_sizes.split(",")):
    for d in (int(x) for x in args.devices.split(",")):
      r = bench(b, d, args, config, model, init)
      step_s = f"{r['step_s']:.3f}" if "step_s" in r else "not run"
      print(f"| {b} | {d} | {b // d} | {r['peak'] / MIB:.1f} | "
            f"{r['temp'] / MIB:.1f} | {r['arguments'] / MIB:.1f} | "
            f"{r['compile_s']:.1f} | {step_s} |", flush=True)


if __name__ == "__main__":
  main()
