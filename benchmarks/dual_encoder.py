"""CLIP / SigLIP dual encoders: per-device memory of a fine-tuning step at
CLIP-scale batches, and the CPU step time of the tiny variant.

1. Memory (compile only, nothing runs): the real `make_train_step` (both
   towers, RSC relevance, InfoNCE + S-NDCG with global-batch semantics, the
   sorted O(B² log B) rank kernel, AdamW) for a ViT-B/16 and a ViT-L/14 CLIP,
   compiled for 8 simulated CPU devices (`--xla_force_host_platform_device_count=8`)
   with the batch split over "data", bfloat16 compute, float32 parameters,
   and the parameters + Adam moments replicated or FSDP-sharded
   (`sharding.FSDP_RULES`), with and without per-block remat. Figures are
   XLA's memory analysis of one device's SPMD program (`sharding.memory`).
   "listwise" is the peak with S-NDCG (weight 0.5) minus the peak of the
   same step without it (weight 0), with FSDP and remat.

   Each row compiles in its own process (`--row_timeout` seconds, then the
   row reads "not measured"), so one slow compile loses no other row.
   XLA's CPU compiler removes the optimisation barriers that keep JAX's
   rematerialisation from being merged back into the forward pass (its
   `cse_barrier_expander` pass runs before a CSE pass; the GPU compiler
   removes them only after scheduling), so a CPU program compiled as is
   keeps every activation with remat on. The rows are compiled with that
   pass disabled (`REMAT_XLA_FLAG`), the program remat describes.
2. CPU time (runs): the tiny variant's step at B = 128 and 512 on one
   device, with and without the listwise term (its share of the step).

  python benchmarks/dual_encoder.py                     # both tables
  python benchmarks/dual_encoder.py --memory_only --variants=B/16 --batch_sizes=4096 \
      --setups=fsdp,fsdp_remat --row_timeout=900
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types

MEMORY_DEVICES = 8
# Keeps JAX's remat barriers in the CPU program (see the module docstring).
REMAT_XLA_FLAG = "--xla_disable_hlo_passes=cse_barrier_expander"

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # pylint: disable=g-import-not-at-top,wrong-import-position

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


# Memory setups: (FSDP parameters, per-block remat).
SETUPS = {"replicated": (False, False), "fsdp": (True, False), "fsdp_remat": (True, True)}


def memory_row(variant: str, batch_size: int, setup: str, weight: float) -> dict:
  """memory.memory_stats of one compiled step on the simulated devices, plus
  its compile seconds (run in a child process: `--memory_row`)."""
  fsdp, remat = SETUPS[setup]
  mesh = sharding.create_mesh([("data", MEMORY_DEVICES)])
  start = time.perf_counter()
  config = make_config(variant, weight=weight, remat=remat, fsdp=fsdp,
                       vocab_size=1000 if variant == "tiny" else 0)  # tiny: a smoke run
  compiled = compiled_step(config, batch_size, mesh)
  return {**memory.memory_stats(compiled), "compile_s": time.perf_counter() - start}


def measure_in_child(spec: str, timeout: float):
  """(stats, None) of `memory_row` run in its own process (niced), or
  (None, why not)."""
  command = [sys.executable, os.path.abspath(__file__), f"--memory_row={spec}"]
  env = {**os.environ, "XLA_FLAGS": " ".join([
      os.environ.get("XLA_FLAGS", ""),
      f"--xla_force_host_platform_device_count={MEMORY_DEVICES}", REMAT_XLA_FLAG])}
  try:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          preexec_fn=lambda: os.nice(10), check=False)
  except subprocess.TimeoutExpired:
    return None, f"not measured: compile > {timeout:.0f} s"
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("MEMORY_ROW "):
      return json.loads(line[len("MEMORY_ROW "):]), None
  last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
  return None, f"failed: {last[:200]}"


def memory_table(args):
  print(f"Per-device memory (GiB) of one CLIP fine-tuning step, {MEMORY_DEVICES} simulated "
        "devices, bf16 compute, f32 params, AdamW, InfoNCE + S-NDCG (sorted); "
        f"jax {jax.__version__}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the start:")
  print("| variant | global batch | params | remat | arguments | temp | peak | listwise "
        "| compile (s) |")
  print("|---|---:|---|---|---:|---:|---:|---:|---:|")
  gib = lambda stats, key: f"{stats[key] / GIB:.2f}"
  for variant in args.variants:
    for batch_size in args.batch_sizes:
      for setup in args.setups:
        fsdp, remat = SETUPS[setup]
        stats, why = measure_in_child(f"{variant},{batch_size},{setup},0.5", args.row_timeout)
        cells = ([gib(stats, "arguments"), gib(stats, "temp"), gib(stats, "peak")]
                 if stats else [why, "", ""])
        listwise = ""
        if stats and setup == "fsdp_remat" and args.listwise:
          base, why = measure_in_child(f"{variant},{batch_size},{setup},0.0",
                                       args.row_timeout)
          listwise = f"{(stats['peak'] - base['peak']) / GIB:.2f}" if base else why
        compile_s = f"{stats['compile_s']:.0f}" if stats else ""
        print(f"| {variant} | {batch_size} | {'FSDP' if fsdp else 'replicated'} | "
              f"{'yes' if remat else 'no'} | {' | '.join(cells)} | {listwise} | "
              f"{compile_s} |", flush=True)


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
      times[weight] = timing.median_step_seconds(step, state, batch, args.steps)
    print(f"| {batch_size} | {times[0.0]:.3f} | {times[0.5]:.3f} | "
          f"{1 - times[0.0] / times[0.5]:.0%} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variants", type=lambda s: s.split(","), default=["B/16", "L/14"])
  parser.add_argument("--batch_sizes", type=lambda s: [int(x) for x in s.split(",")],
                      default=[4096, 16384])
  parser.add_argument("--setups", type=lambda s: s.split(","), default=list(SETUPS),
                      help=f"memory rows among {sorted(SETUPS)}")
  parser.add_argument("--no_listwise", dest="listwise", action="store_false",
                      help="skip the weight-0 compile of the listwise column")
  parser.add_argument("--row_timeout", type=float, default=900,
                      help="seconds one memory row may compile")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--memory_only", action="store_true")
  parser.add_argument("--time_only", action="store_true")
  parser.add_argument("--memory_row", help=argparse.SUPPRESS)  # VARIANT,BATCH,SETUP,WEIGHT
  args = parser.parse_args()
  if args.memory_row:
    variant, batch_size, setup, weight = args.memory_row.split(",")
    print("MEMORY_ROW " + json.dumps(memory_row(variant, int(batch_size), setup,
                                                float(weight))), flush=True)
    return
  unknown = sorted(set(args.setups) - set(SETUPS))
  if unknown:
    parser.error(f"--setups: unknown {unknown}; choose among {sorted(SETUPS)}.")
  if not args.time_only:
    memory_table(args)
  if not args.memory_only:
    time_table(args)


if __name__ == "__main__":
  main()
