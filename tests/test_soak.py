"""Long-run smoke test (slow: run with `bash launch/test.sh -m slow`).

Thousands of steps of the tiny config; the process's memory must stay flat
after warm-up and throughput must not decay. benchmarks/soak_train.py prints
the same measurements as a table. A soak needs its length, so no fast test
covers its memory and throughput checks; the default run covers the same
training loop over a few epochs (test_train_end_to_end).
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import soak_train  # pylint: disable=wrong-import-position


@pytest.mark.slow
def test_no_memory_growth_and_steady_throughput(tmp_path):
  start, samples, records = soak_train.soak(2000, str(tmp_path))
  end = samples[-1][0]
  warm = [rss for t, rss in samples if t >= start + 0.25 * (end - start)]
  assert warm[-1] - warm[0] < 100, f"RSS grew {warm[0]:.0f} -> {warm[-1]:.0f} MiB"
  quarter = len(records) // 4
  early = records[quarter]["steps_per_second"]
  late = records[-1]["steps_per_second"]
  assert late > 0.5 * early, (early, late)
