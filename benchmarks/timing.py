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
  return statistics.median(wall_and_cpu_seconds(call, repeats)[1])


def wall_and_cpu_seconds(call, repeats: int):
  """(first call's seconds, per-call wall seconds, per-call CPU seconds) of
  `repeats` calls of `call()` after a first one (which compiles).

  CPU time (all threads of this process) is the contention-robust number on a
  shared machine: with C free cores, wall time is about CPU time / C.
  """

  def timed():
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(call())
    return time.perf_counter() - wall, time.process_time() - cpu

  first, _ = timed()
  walls, cpus = zip(*[timed() for _ in range(repeats)]) if repeats else ((), ())
  return first, list(walls), list(cpus)


def step_call(step, state, batch):
  """A no-argument call of a train step `step(state, batch) -> (state, metrics)`
  that donates its input state: each call feeds the previous call's state and
  returns the metrics."""
  holder = [state]

  def call():
    holder[0], metrics = step(holder[0], batch)
    return metrics

  return call


def median_step_seconds(step, state, batch, repeats: int) -> float:
  """`median_seconds` of a train step that donates its input state."""
  return median_seconds(step_call(step, state, batch), repeats)
