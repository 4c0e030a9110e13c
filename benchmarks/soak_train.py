r"""Long-run smoke test: RSS and throughput over a few thousand train steps.

Trains the tiny test configuration (tests/tiny_config.py) for --steps steps
in this process while a thread samples the process's resident memory, then
prints RSS and steps/s over the run. Memory that keeps growing after warm-up
(compilation, first evaluation, first checkpoint) would be a leak.

  python benchmarks/soak_train.py --steps=3000
"""
import argparse
import os
import sys
import tempfile
import threading
import time

import psutil

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from tiny_config import STEPS_PER_EPOCH, tiny_config  # pylint: disable=wrong-import-position

from itr_jax.training import reporting  # pylint: disable=wrong-import-position
from itr_jax.training import trainer  # pylint: disable=wrong-import-position


def soak(steps: int, workdir: str, sample_seconds: float = 1.0):
  """Trains; returns (start time, [(time, rss MiB)], train log records)."""
  config = tiny_config(os.path.join(workdir, "data"),
                       num_epochs=max(1, steps // STEPS_PER_EPOCH))
  config.train.log_every_steps = 100
  config.train.checkpoint_every_steps = 500
  config.eval.every_epochs = 50
  process = psutil.Process()
  samples, done = [], threading.Event()

  def sample():
    while not done.is_set():
      samples.append((time.time(), process.memory_info().rss / 2**20))
      done.wait(sample_seconds)

  start = time.time()
  thread = threading.Thread(target=sample, daemon=True)
  thread.start()
  try:
    trainer.train_and_evaluate(config, os.path.join(workdir, "run"))
  finally:
    done.set()
    thread.join()
  records = [r for r in reporting.read_metrics(os.path.join(workdir, "run"))
             if r["kind"] == "train"]
  return start, samples, records


def rss_at(samples, t: float) -> float:
  return min(samples, key=lambda s: abs(s[0] - t))[1]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=3000)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as workdir:
    start, samples, records = soak(args.steps, workdir)
  end = samples[-1][0]
  print(f"{records[-1]['step']} steps in {end - start:.0f} s (RSS sampled every second)\n")
  print("| step | elapsed s | RSS MiB | steps/s since previous row |")
  print("|---:|---:|---:|---:|")
  rows = records[::max(1, len(records) // 10)]
  if rows[-1] is not records[-1]:
    rows.append(records[-1])
  previous = None
  for r in rows:
    rate = "" if previous is None else (
        f"{(r['step'] - previous['step']) / (r['time'] - previous['time']):.1f}")
    print(f"| {r['step']} | {r['time'] - start:.1f} | {rss_at(samples, r['time']):.0f} | {rate} |")
    previous = r
  warm = [rss for t, rss in samples if t >= start + 0.25 * (end - start)]
  print(f"\nRSS over the last 75% of the run: first {warm[0]:.0f} MiB, min {min(warm):.0f}, "
        f"max {max(warm):.0f}, last {warm[-1]:.0f} MiB (growth {warm[-1] - warm[0]:+.0f} MiB)")


if __name__ == "__main__":
  main()
