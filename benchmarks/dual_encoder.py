"""CLIP / SigLIP dual encoders: per-device memory of a fine-tuning step at
CLIP-scale batches, and the CPU step time of the tiny variant.

1. Memory (compile only, nothing runs): the real `make_train_step` (both
   towers, RSC relevance, InfoNCE + S-NDCG with global-batch semantics, the
   sorted O(B² log B) rank kernel, AdamW) for a ViT-B/16 and a ViT-L/14 CLIP,
   compiled for 8 simulated CPU devices (`--xla_force_host_platform_device_count=8`)
   with the batch split over "data", bfloat16 compute, float32 parameters,
   and the parameters + Adam moments replicated or FSDP-sharded
   (`sharding.FSDP_RULES`), with and without per-block remat. Figures are
   XLA's memory analysis of one device's SPMD program (`sharding.memory`):
   what a device would need on real hardware. "listwise" is the peak with
   S-NDCG (weight 0.5) minus the peak of the same step without it (weight 0).
2. CPU time (runs): the tiny variant's step at B = 128 and 512 on one
   device, with and without the listwise term (its share of the step).

  python benchmarks/dual_encoder.py                     # both tables
  python benchmarks/dual_encoder.py --memory_only --variants=B/16 --batch_sizes=4096
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import types

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from itr_jax import losses  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.sharding import memory  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import defaults  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import optimizer  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import train_step as train_step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position

GIB = 2.0**30


def make_config(variant, *, weight, remat, fsdp, dtype="bfloat16", vocab_size=0):
  c = defaults.base_config()
  c.model.name, c.model.variant, c.model.remat, c.model.dtype = "clip", variant, remat, dtype
  c.model.vocab_size = vocab_size
  c.loss.pairwise, c.loss.weight, c.loss.rank_method = "infonce", weight, "sorted"
  c.optim.name, c.optim.weight_decay, c.optim.decay_mask = "adamw", 0.1, "matrices"
  c.sharding.rules = sharding.FSDP_RULES if fsdp else ()
  return c


def batch_structs(batch_size, image_size, context, mesh=None):
  shapes = {"images": ((batch_size, image_size, image_size, 3), jnp.float32),
            "tokens": ((batch_size, context), jnp.int32), "lengths": ((batch_size,), jnp.int32),
            "image_caption_emb": ((batch_size, 5, 384), jnp.float32),
            "caption_emb": ((batch_size, 384), jnp.float32)}
  place = {} if mesh is None else {"sharding": sharding.batch_sharding(mesh)}
  return {k: jax.ShapeDtypeStruct(s, d, **place) for k, (s, d) in shapes.items()}


def compiled_step(config, batch_size, mesh):
  model = trainer.build_model(config, config.model.vocab_size)
  tx = optimizer.create_optimizer(config.optim, steps_per_epoch=1000)
  abstract = trainer.abstract_train_state(config, model, tx, types.SimpleNamespace())
  shardings = sharding.state_shardings(abstract, mesh, config.sharding)
  step = train_step_lib.make_train_step(model, losses.LossOptions.from_config(config.loss),
                                        mesh=mesh, state_sharding=shardings)
  a = model.arch
  return step.lower(sharding.with_shardings(abstract, shardings),
                    batch_structs(batch_size, a.image_size, a.context_length, mesh)).compile()


def memory_table(args):
  mesh = sharding.create_mesh([("data", 8)])
  print(f"Per-device memory (GiB) of one CLIP fine-tuning step, {mesh.size} devices, "
        "bf16 compute, f32 params, AdamW, InfoNCE + S-NDCG (sorted):")
  print("| variant | global batch | params | remat | arguments | temp | peak | listwise |")
  print("|---|---:|---|---|---:|---:|---:|---:|")
  for variant in args.variants:
    for batch_size in args.batch_sizes:
      for fsdp, remat in ((False, False), (True, False), (True, True)):
        stats = memory.memory_stats(compiled_step(
            make_config(variant, weight=0.5, remat=remat, fsdp=fsdp), batch_size, mesh))
        listwise = ""
        if fsdp and remat:
          base = memory.memory_stats(compiled_step(
              make_config(variant, weight=0.0, remat=remat, fsdp=fsdp), batch_size, mesh))
          listwise = f"{(stats['peak'] - base['peak']) / GIB:.2f}"
        print(f"| {variant} | {batch_size} | {'FSDP' if fsdp else 'replicated'} | "
              f"{'yes' if remat else 'no'} | {stats['arguments'] / GIB:.2f} | "
              f"{stats['temp'] / GIB:.2f} | {stats['peak'] / GIB:.2f} | {listwise} |", flush=True)


def time_table(args):
  print(f"\nCPU step time of the tiny variant (one device, {os.cpu_count()} cores, float32, "
        f"median of {args.steps} steps):")
  print("| global batch | InfoNCE (s) | InfoNCE + S-NDCG (s) | listwise share |")
  print("|---:|---:|---:|---:|")
  rng = np.random.default_rng(0)
  for batch_size in (128, 512):
    times = {}
    for weight in (0.0, 0.5):
      config = make_config("tiny", weight=weight, remat=False, fsdp=False, dtype="",
                           vocab_size=1000)
      config.loss.rank_method = "auto"
      model = trainer.build_model(config, 1000)
      tx = optimizer.create_optimizer(config.optim, steps_per_epoch=1000)
      state = trainer.create_train_state(config, model, tx, types.SimpleNamespace())
      step = train_step_lib.make_train_step(model, losses.LossOptions.from_config(config.loss))
      batch = {k: (rng.integers(1, 1000, s.shape) if s.dtype == jnp.int32 else
                   rng.normal(size=s.shape)).astype(s.dtype)
               for k, s in batch_structs(batch_size, 32, 16).items()}
      batch["lengths"] = np.full((batch_size,), 16, np.int32)
      state, metrics = step(state, batch)  # compile
      jax.block_until_ready(metrics)
      samples = []
      for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        samples.append(time.perf_counter() - start)
      times[weight] = statistics.median(samples)
    print(f"| {batch_size} | {times[0.0]:.3f} | {times[0.5]:.3f} | "
          f"{1 - times[0.0] / times[0.5]:.0%} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variants", type=lambda s: s.split(","), default=["B/16", "L/14"])
  parser.add_argument("--batch_sizes", type=lambda s: [int(x) for x in s.split(",")],
                      default=[4096, 16384])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--memory_only", action="store_true")
  parser.add_argument("--time_only", action="store_true")
  args = parser.parse_args()
  if not args.time_only:
    memory_table(args)
  if not args.memory_only:
    time_table(args)


if __name__ == "__main__":
  main()
