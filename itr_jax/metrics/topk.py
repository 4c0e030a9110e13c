"""Deterministic top-k of each row of a score matrix (host-side NumPy)."""
from __future__ import annotations

import numpy as np

from itr_jax.metrics import _checks


def _ranked_by_mask(scores: np.ndarray, kth: np.ndarray, k: int) -> np.ndarray:
  """Top-k columns (increasing column order) when the k-th score is tied:
  every score above the k-th, then the lowest-index ties until k are taken."""
  above = scores > kth
  tied = scores == kth
  still_needed = k - np.count_nonzero(above, axis=1, keepdims=True)
  keep = above | (tied & (np.cumsum(tied, axis=1) <= still_needed))
  # Row-major nonzero: exactly k columns per row, in increasing order.
  return np.nonzero(keep)[1].reshape(scores.shape[0], k)


def _sort_tied_runs(order: np.ndarray, same_as_previous: np.ndarray) -> None:
  """In place: within every run of equal scores in `order` (one row of column
  indices per query, sorted by score), put the column indices in ascending
  order. `same_as_previous[r, p]` says position p+1 ties with position p."""
  in_run = np.zeros(order.shape, dtype=bool)
  in_run[:, 1:] = same_as_previous
  in_run[:, :-1] |= same_as_previous
  rows, positions = np.nonzero(in_run)
  if rows.size == 0:
    return
  starts_run = (positions == 0) | ~same_as_previous[rows, np.maximum(positions - 1, 0)]
  run_id = np.cumsum(starts_run)  # increasing along (row, position)
  cols = order[rows, positions]
  order[rows, positions] = cols[np.lexsort((cols, run_id))]


def top_k_indices(scores, k: int | None = None) -> np.ndarray:
  """Column indices of the `k` highest scores of every row, best first.

  Ties are broken by column index (the lower index ranks first), so the
  result is the same on every platform; `np.argpartition`/`np.argsort` alone
  would order tied scores arbitrarily.

  Cost is O(M) per row for k < M (partition), O(M log M) for the full ranking
  (k=None or k >= M); rows are processed in chunks of ~1M elements, so memory
  stays bounded for e.g. a 25000 x 5000 transposed similarity matrix.

  >>> import numpy as np
  >>> top_k_indices(np.array([[0.1, 0.9, 0.5, 0.9]]), 3)
  array([[1, 3, 2]])

  Args:
    scores: [R, M] real scores (not NaN).
    k: how many columns to return per row; None or k >= M gives all M.

  Returns:
    int array [R, min(k, M)].
  """
  scores = _checks.as_score_matrix(scores, "scores")
  k = _checks.check_optional_k(k)
  num_rows, num_cols = scores.shape
  k = num_cols if k is None else min(k, num_cols)
  out = np.empty((num_rows, k), dtype=np.intp)
  step = _checks.rows_per_chunk(num_cols)
  for start in range(0, num_rows, step):
    # ascontiguousarray: rows of a transposed matrix are strided, which makes
    # partition/sort several times slower.
    chunk = np.ascontiguousarray(scores[start:start + step])
    _checks.check_no_nan(chunk, "scores")
    out[start:start + step] = _top_k_chunk(chunk, k)
  return out


def _top_k_chunk(scores: np.ndarray, k: int) -> np.ndarray:
  """`top_k_indices` of one contiguous chunk, 1 <= k <= M."""
  num_rows, num_cols = scores.shape
  if not np.issubdtype(scores.dtype, np.floating):
    scores = scores.astype(np.float64)  # so that negation cannot overflow
  if k == num_cols:
    # The unstable sort is several times faster than a stable one but may
    # leave runs of tied scores out of index order (a float32 row of 25K
    # similarities usually holds a few ties): re-sort just those runs.
    order = np.argsort(-scores, axis=1)
    ranked = np.take_along_axis(scores, order, axis=1)
    _sort_tied_runs(order, ranked[:, 1:] == ranked[:, :-1])
    return order

  cols = np.argpartition(scores, num_cols - k, axis=1)[:, num_cols - k:]
  values = np.take_along_axis(scores, cols, axis=1)
  kth = values.min(axis=1, keepdims=True)
  # If the k-th score also occurs outside the chosen k, the partition picked
  # an arbitrary subset of the ties: pick the lowest-index ones instead.
  crowded = np.flatnonzero(np.count_nonzero(scores == kth, axis=1)
                           > np.count_nonzero(values == kth, axis=1))
  if crowded.size:
    cols[crowded] = _ranked_by_mask(scores[crowded], kth[crowded], k)
    values[crowded] = np.take_along_axis(scores[crowded], cols[crowded], axis=1)
  # Sort the k by descending score, then ascending column index.
  order = np.lexsort((cols, -values), axis=1)
  return np.take_along_axis(cols, order, axis=1)
