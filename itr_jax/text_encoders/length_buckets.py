"""Length bucketing: few padded shapes, so a jitted encoder compiles few times."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def length_buckets(max_length: int, smallest: int = 8) -> tuple[int, ...]:
  """Padded lengths ``8, 16, 24, 32, 48, 64, 96, 128, ...`` up to `max_length`.

  Powers of two and their midpoints (1.5x) bound the padding waste to a third
  of a batch's width; `max_length` itself is always the last bucket.

  >>> length_buckets(256)
  (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
  >>> length_buckets(100)
  (8, 16, 24, 32, 48, 64, 96, 100)
  """
  if max_length < 1 or smallest < 1:
    raise ValueError(f"max_length ({max_length}) and smallest ({smallest}) "
                     "must be >= 1")
  buckets, size = [], smallest
  while size < max_length:
    buckets.append(size)
    if size * 3 // 2 < max_length and size >= 16:
      buckets.append(size * 3 // 2)
    size *= 2
  return tuple(sorted(set(buckets))) + (max_length,)


@dataclasses.dataclass(frozen=True)
class Batch:
  """One padded batch: `indices` of the inputs, padded to `rows` x `length`."""
  indices: np.ndarray
  rows: int
  length: int


def plan_batches(lengths: Sequence[int], batch_size: int,
                 buckets: Sequence[int]) -> list[Batch]:
  """Groups inputs of similar length into batches padded to bucket shapes.

  Inputs are sorted by length (stable) and cut into runs of `batch_size`;
  each run is padded to the smallest bucket that holds its longest input.
  Only the final, partial run has fewer rows; it is padded to the next power
  of two (at most `batch_size`), so a call compiles at most
  ``len(buckets) + log2(batch_size)`` shapes.

  >>> [(b.indices.tolist(), b.rows, b.length)
  ...  for b in plan_batches([30, 5, 12], 2, (8, 16, 32))]
  [([1, 2], 2, 16), ([0], 1, 32)]
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  lengths = np.asarray(lengths, dtype=np.int64)
  if lengths.size and lengths.max() > buckets[-1]:
    raise ValueError(f"an input has {lengths.max()} tokens, more than the "
                     f"largest bucket {buckets[-1]}; truncate first")
  order = np.argsort(lengths, kind="stable")
  batches = []
  for start in range(0, len(order), batch_size):
    indices = order[start:start + batch_size]
    longest = int(lengths[indices].max())
    length = next(b for b in buckets if b >= longest)
    rows = batch_size if len(indices) == batch_size else min(
        batch_size, 1 << (len(indices) - 1).bit_length())
    batches.append(Batch(indices, rows, length))
  return batches
