"""Wall-clock timing shared by the benchmark scripts.

Every figure is the median over `repeats` calls after one warm-up call (which
compiles), each call blocked until its results are ready:

>>> import jax.numpy as jnp
>>> median_seconds(lambda: jnp.ones(3) * 2, repeats=3) >= 0
True
"""
from __future__ import annotations

import statistics
import time

import jax


def median_seconds(call, repeats: int) -> float:
  """Median wall seconds of `call()` over `repeats` calls, after one warm-up call."""
  jax.block_until_ready(call())
  walls = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(call())
    walls.append(time.perf_counter() - start)
  return statistics.median(walls)


def median_step_seconds(step, state, batch, repeats: int) -> float:
  """`median_seconds` of a train step `step(state, batch) -> (state, metrics)`
  that donates its input state: each call feeds the previous call's state."""
  holder = [state]

  def call():
    holder[0], metrics = step(holder[0], batch)
    return metrics

  return median_seconds(call, repeats)
