"""NDCG@k of a score matrix against a graded relevance matrix (host-side NumPy).

For one query row with scores s and graded relevance r over M candidates, let
pi be the candidates sorted by descending score (ties: lower column first; with
`ties="official"`, the official evaluation's `np.argsort(s)[::-1]` order, see
`itr_jax.metrics.recall`) and pi* the candidates sorted by descending relevance:

  DCG@k  = sum_{j=1}^{k} (2^{r[pi_j]} - 1) / log2(1 + j)
  NDCG@k = DCG@k(pi) / DCG@k(pi*)

`ndcg` returns the mean over rows. Rows whose ideal DCG is 0 (no candidate
with relevance > 0) have no defined NDCG and are left out of the mean, as
trec_eval leaves out queries without relevant documents; if every row is left
out the result is NaN.

Result keys (`ndcg_key`) name the cutoff when there is one: NDCG over the
full ranking with RSC relevance, image to text, is `rsc_ndcg_i2t`; NDCG@10
is `rsc_ndcg@10_i2t`, so results of different cutoffs are never mixed.
"""
from __future__ import annotations

import re

import numpy as np

from itr_jax.metrics import _checks
from itr_jax.metrics import recall
from itr_jax.metrics.topk import top_k_indices


def _discounts(k: int) -> np.ndarray:
  return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _gains(relevance: np.ndarray) -> np.ndarray:
  return np.exp2(relevance.astype(np.float64)) - 1.0


def _ideal_relevance(relevance: np.ndarray, k: int) -> np.ndarray:
  """The k largest relevance values of every row, largest first."""
  num_cols = relevance.shape[1]
  if k < num_cols:
    relevance = np.partition(relevance, num_cols - k, axis=1)[:, num_cols - k:]
  # NumPy's stable sort is a radix sort for <= 16-bit integers (e.g. int8
  # relevance levels): ~10x faster than the default sort on those.
  small_int = np.issubdtype(relevance.dtype, np.integer) and relevance.itemsize <= 2
  return np.sort(relevance, axis=1, kind="stable" if small_int else None)[:, ::-1]


def ndcg_per_row(scores, relevance, *, k: int | None = None,
                 ties: str = "optimistic") -> np.ndarray:
  """NDCG@k of every row; NaN where the row's ideal DCG is 0.

  >>> import numpy as np
  >>> ndcg_per_row(np.array([[0.9, 0.1], [0.5, 0.6]]), np.array([[1, 0], [0, 0]]))
  array([ 1., nan])

  Args:
    scores: [R, M] scores (NumPy or JAX), higher = ranked first.
    relevance: [R, M] graded relevance >= 0 (integer levels or real values).
    k: cut-off; None ranks all M candidates. k > M is treated as M.
    ties: order of tied scores: "optimistic" (the default: lower column
      first) or "official" (`np.argsort(row)[::-1]`, as the official
      evaluation ranks).

  Returns:
    float64 array [R].
  """
  scores = _checks.as_score_matrix(scores, "scores")
  relevance = np.asarray(relevance)
  if relevance.dtype == bool:  # binary relevance: gains 0 / 1
    relevance = relevance.astype(np.uint8)
  relevance = _checks.as_score_matrix(relevance, "relevance")
  k = _checks.check_optional_k(k)
  recall.check_ties(ties)
  if scores.shape != relevance.shape:
    raise ValueError(f"`scores` {scores.shape} and `relevance` {relevance.shape} must "
                     "have the same shape (for t2i pass both transposed).")
  num_rows, num_cols = scores.shape
  k = num_cols if k is None else min(k, num_cols)
  out = np.full(num_rows, np.nan)
  if num_cols == 0:
    return out
  discounts = _discounts(k)
  step = _checks.rows_per_chunk(num_cols)
  for start in range(0, num_rows, step):
    # ascontiguousarray: chunks of a transposed (t2i) matrix would otherwise be
    # strided, which makes partition/sort several times slower.
    r = np.ascontiguousarray(relevance[start:start + step])
    _checks.check_no_nan(r, "relevance")
    if (r < 0).any():
      raise ValueError("`relevance` must be >= 0 (gain 2^rel - 1 would be negative).")
    if ties == "official":
      _checks.check_no_nan(scores[start:start + step], "scores")
      top = np.argsort(scores[start:start + step], axis=1)[:, ::-1][:, :k]
    else:
      top = top_k_indices(scores[start:start + step], k)
    ranked = np.take_along_axis(r, top, axis=1)
    dcg = _gains(ranked) @ discounts
    idcg = _gains(_ideal_relevance(r, k)) @ discounts
    with np.errstate(invalid="ignore", divide="ignore"):
      out[start:start + step] = np.where(idcg > 0, dcg / idcg, np.nan)
  return out


def ndcg(scores, relevance, *, k: int | None = None,
         ties: str = "optimistic") -> float:
  """Mean NDCG@k over the rows of `scores` (see the module docstring).

  Gain 2^rel - 1, discount 1 / log2(1 + rank); rows with ideal DCG 0 are left
  out of the mean (NaN if all are).

  >>> import numpy as np
  >>> scores = np.array([[0.9, 0.5, 0.1]])
  >>> relevance = np.array([[0, 2, 1]])   # ideal order: 1, 2, 0
  >>> round(ndcg(scores, relevance), 4)   # (3/log2(3) + 1/log2(4)) / (3 + 1/log2(3))
  0.659
  >>> round(ndcg(scores, relevance, k=1), 4)
  0.0
  """
  per_row = ndcg_per_row(scores, relevance, k=k, ties=ties)
  defined = per_row[~np.isnan(per_row)]
  return float(defined.mean()) if defined.size else float("nan")


def ndcg_both_directions(sims, relevance, *, k: int | None = None,
                         ties: str = "optimistic") -> dict[str, float]:
  """NDCG@k of image-to-text (rows of `sims`) and text-to-image (columns).

  `relevance[i, j]` is the graded relevance of image i and caption j, one
  matrix for both directions: t2i ranks images for each caption, i.e. uses
  `sims.T` against `relevance.T`.

  >>> import numpy as np
  >>> sims = np.array([[0.9, 0.2], [0.1, 0.8]])
  >>> ndcg_both_directions(sims, np.eye(2))
  {'ndcg_i2t': 1.0, 'ndcg_t2i': 1.0}

  Args:
    sims: [N_images, N_captions] similarities.
    relevance: [N_images, N_captions] graded relevance >= 0.
    k: cut-off for both directions (None: full ranking).
    ties: order of tied scores, as in `ndcg_per_row`.
  """
  sims = _checks.as_score_matrix(sims, "sims")
  relevance = np.asarray(relevance)
  if relevance.ndim != 2:
    raise ValueError(f"`relevance` must be a 2-D matrix, got shape {relevance.shape}.")
  return {
      "ndcg_i2t": ndcg(sims, relevance, k=k, ties=ties),
      "ndcg_t2i": ndcg(sims.T, relevance.T, k=k, ties=ties),
  }


_KEY = re.compile(r"^(?P<head>.*ndcg)(?:@(?P<k>\d+))?(?P<tail>_(?:i2t|t2i))$")


def ndcg_key(name: str, k: int | None = None) -> str:
  """The result key of NDCG metric `name` (e.g. `rsc_ndcg_i2t`) with cutoff `k`.

  No cutoff (None or 0) leaves `name` as it is; other metrics too.

  >>> ndcg_key("rsc_ndcg_i2t", 10), ndcg_key("rsc_ndcg_i2t"), ndcg_key("rsum", 10)
  ('rsc_ndcg@10_i2t', 'rsc_ndcg_i2t', 'rsum')
  """
  match = _KEY.match(name)
  if not k or not match:
    return name
  return f"{match['head']}@{int(k)}{match['tail']}"


def split_ndcg_key(key: str) -> tuple[str, int | None]:
  """(the key without its cutoff, the cutoff or None): `ndcg_key` undone.

  >>> split_ndcg_key("rsc_ndcg@10_t2i"), split_ndcg_key("true_ndcg_i2t"), split_ndcg_key("rsum")
  (('rsc_ndcg_t2i', 10), ('true_ndcg_i2t', None), ('rsum', None))
  """
  match = _KEY.match(key)
  if not match or match["k"] is None:
    return key, None
  return match["head"] + match["tail"], int(match["k"])
