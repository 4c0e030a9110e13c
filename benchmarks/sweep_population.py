"""Population (vmapped) training vs one member at a time, on the demo's shapes.

Times, after compilation, one train step of a single member
(`train_step.make_train_step`) and one step of a population of P members
(`sweeps.population.make_population_step`, P models stacked and vmapped) on
real batches of the demo dataset (configs/synthetic_scenes.py). Reports the
compile time, median wall seconds and process CPU seconds per step, and the
per-member cost relative to P separate single-member steps. Separate
processes additionally pay start-up, data opening and compilation once each
(reported as "compile+first").

  python benchmarks/sweep_population.py [--sizes 3 9] [--steps 20] \
      [--data_dir data/synthetic_scenes]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax

from itr_jax import losses
from itr_jax.sweeps import declaration
from itr_jax.sweeps import population
from itr_jax.training import experiment_data
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import train_step
from itr_jax.training import trainer

DEMO = os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic_scenes.py")


def time_steps(step, state, batches, steps):
  """(compile+first seconds, median wall s/step, median CPU s/step)."""
  t = time.perf_counter()
  state, m = step(state, next(batches))
  jax.block_until_ready(m)
  first = time.perf_counter() - t
  walls, cpus = [], []
  for _ in range(steps):
    batch = next(batches)
    w, c = time.perf_counter(), time.process_time()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    walls.append(time.perf_counter() - w)
    cpus.append(time.process_time() - c)
  return first, statistics.median(walls), statistics.median(cpus)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[3, 9])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--data_dir", default=None, help="default: the demo's")
  args = parser.parse_args(argv)
  config = declaration.load_config_file(DEMO)
  if args.data_dir:
    config.data.data_dir = args.data_dir
  data = experiment_data.prepare(config, "/tmp/unused_workdir")
  model = trainer.build_model(config, len(data.vocab))
  tx = optimizer_lib.create_optimizer(config.optim, data.steps_per_epoch)
  batches = data.train_batches()

  single = train_step.make_train_step(model, losses.LossOptions.from_config(config.loss))
  state = trainer.create_train_state(config, model, tx, data.train)
  first, wall1, cpu1 = time_steps(single, state, batches, args.steps)
  print(f"jax {jax.__version__}, {jax.device_count()} device(s), {os.cpu_count()} CPUs; "
        f"demo shapes, batch {config.train.batch_size}, median of {args.steps} steps")
  print("| members | compile+first (s) | wall s/step | CPU s/step | wall per member-step "
        "| vs separate (wall) | vs separate (CPU) |")
  print("|---|---|---|---|---|---|---|")
  print(f"| 1 (plain step) | {first:.1f} | {wall1:.4f} | {cpu1:.4f} | {wall1:.4f} | 1.00x | 1.00x |")
  for p in args.sizes:
    configs = [declaration.apply_overrides(config, {"seed": s, "loss.weight": w})
               for s, w in zip(range(p), [0.0, 0.5, 1.0] * p)]
    states = population.init_population(config, model, tx, data.train,
                                        [c.seed for c in configs])
    hparams = population.hparams_array(configs)
    step = population.make_population_step(model, config.loss)
    first, wall, cpu = time_steps(lambda s, b: step(s, hparams, b), states, batches,
                                  args.steps)
    print(f"| {p} (vmapped) | {first:.1f} | {wall:.4f} | {cpu:.4f} | {wall / p:.4f} "
          f"| {p * wall1 / wall:.2f}x | {p * cpu1 / cpu:.2f}x |")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
