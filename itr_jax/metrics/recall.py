"""Recall@K / median rank / mean rank for image-text retrieval (VSE++/SCAN protocol).

The similarity matrix is `sims[i, c]` for image i and caption c, with caption c
describing image `c // captions_per_image` (the COCO/Flickr30K layout).

Ranks are 0-based and computed without sorting:

  i2t: rank_i = #{c : sims[i, c] > max_{c' in captions(i)} sims[i, c']}
  t2i: rank_c = #{i : sims[i, c] > sims[image(c), c]}

i.e. the position of the best ground truth in a descending sort. For distinct
scores this is exactly the rank the loop-based reference (per-query argsort)
finds. With `ties="optimistic"` (the default) ties with the ground truth are
resolved in its favour. `ties="official"` resolves them as the official
VSE++/Listwise_ITR evaluation does: the rank is the ground truth's position in
`np.argsort(sims[q])[::-1]` (NumPy's default sort, reversed), whose order
among ties is NumPy's (for rows of at most 16 entries the higher index comes
first; beyond that it is implementation defined, as in the official code).
Exact ties with the ground truth are rare for float32 similarities
(none in a random 5000 x 25000 COCO-sized test) but common for low-precision
(bfloat16) or collapsed (constant) embeddings, where the optimistic rule
overstates recall: compute similarities in float32 before evaluating.
"""
from __future__ import annotations

import numpy as np

from itr_jax.metrics import _checks

RECALL_KS = (1, 5, 10)
TIES = ("optimistic", "official")


def check_ties(ties, name: str = "ties") -> str:
  """Returns `ties` if it is one of `TIES`, else raises ValueError."""
  if ties not in TIES:
    raise ValueError(f"`{name}` must be one of {TIES} (ties with the ground "
                     f"truth in its favour, or by argsort order as the official "
                     f"evaluation), got {ties!r}.")
  return ties


def official_positions(scores: np.ndarray) -> np.ndarray:
  """pos[q, c]: 0-based position of column c in `np.argsort(scores[q])[::-1]`.

  The official evaluation's ranking order (descending, ties in NumPy's
  reversed argsort order).

  >>> official_positions(np.array([[0.5, 0.9, 0.5]]))  # the later tie first
  array([[2, 0, 1]])
  """
  order = np.argsort(scores, axis=1)[:, ::-1]
  positions = np.empty_like(order)
  np.put_along_axis(positions, order, np.arange(scores.shape[1])[None, :], axis=1)
  return positions


def i2t_ranks(sims, *, captions_per_image: int = 5,
              ties: str = "optimistic") -> np.ndarray:
  """0-based rank of the best-ranked ground-truth caption of every image.

  rank_i = #{c : sims[i, c] > max_{c in [i*C, (i+1)*C)} sims[i, c]}, C = captions_per_image
  (`ties="optimistic"`); `ties="official"`: the smallest position of a ground
  truth in `np.argsort(sims[i])[::-1]` (see the module docstring).

  >>> import numpy as np
  >>> sims = np.array([[0.1, 0.9, 0.5, 0.2],   # image 0 owns captions 0, 1
  ...                  [0.8, 0.1, 0.7, 0.3]])  # image 1 owns captions 2, 3
  >>> i2t_ranks(sims, captions_per_image=2)
  array([0, 1])

  Returns:
    int64 array [N_images].
  """
  sims, cpi = _checks.check_sims_layout(sims, captions_per_image)
  check_ties(ties)
  num_images, num_captions = sims.shape
  ranks = np.empty(num_images, dtype=np.int64)
  step = _checks.rows_per_chunk(num_captions)
  for start in range(0, num_images, step):
    chunk = sims[start:start + step]
    _checks.check_no_nan(chunk, "sims")
    rows = np.arange(chunk.shape[0])
    if ties == "official":
      positions = official_positions(chunk).reshape(chunk.shape[0], num_images, cpi)
      ranks[start:start + step] = positions[rows, start + rows].min(axis=1)
      continue
    # [rows, C] block of each image's own captions.
    own = chunk.reshape(chunk.shape[0], num_images, cpi)[rows, start + rows]
    ranks[start:start + step] = np.count_nonzero(chunk > own.max(axis=1, keepdims=True), axis=1)
  return ranks


def t2i_ranks(sims, *, captions_per_image: int = 5,
              ties: str = "optimistic") -> np.ndarray:
  """0-based rank of the ground-truth image of every caption.

  rank_c = #{i : sims[i, c] > sims[c // C, c]}, C = captions_per_image
  (`ties="optimistic"`); `ties="official"`: the position of image c // C in
  `np.argsort(sims[:, c])[::-1]` (see the module docstring).

  >>> import numpy as np
  >>> sims = np.array([[0.1, 0.9, 0.5, 0.2],
  ...                  [0.8, 0.1, 0.7, 0.3]])
  >>> t2i_ranks(sims, captions_per_image=2)
  array([1, 0, 0, 0])

  Returns:
    int64 array [N_captions].
  """
  sims, cpi = _checks.check_sims_layout(sims, captions_per_image)
  check_ties(ties)
  num_images, num_captions = sims.shape
  captions = np.arange(num_captions)
  if ties == "official":
    return _official_t2i_ranks(sims, cpi)
  own = sims[captions // cpi, captions]  # score of each caption's own image
  _checks.check_no_nan(own, "sims")
  ranks = np.zeros(num_captions, dtype=np.int64)
  # Walk down image rows (contiguous memory) and add up, per caption column,
  # how many images beat the ground truth.
  step = _checks.rows_per_chunk(num_captions)
  for start in range(0, num_images, step):
    chunk = sims[start:start + step]
    _checks.check_no_nan(chunk, "sims")
    ranks += np.count_nonzero(chunk > own, axis=0)
  return ranks


def _official_t2i_ranks(sims: np.ndarray, cpi: int) -> np.ndarray:
  num_images, num_captions = sims.shape
  ranks = np.empty(num_captions, dtype=np.int64)
  step = _checks.rows_per_chunk(num_images)
  for start in range(0, num_captions, step):
    # Caption queries as rows, like the official `sims.T`.
    chunk = np.ascontiguousarray(sims[:, start:start + step].T)
    _checks.check_no_nan(chunk, "sims")
    captions = start + np.arange(chunk.shape[0])
    ranks[start:start + step] = official_positions(chunk)[
        captions - start, captions // cpi]
  return ranks


def summarize_ranks(ranks) -> dict[str, float]:
  """R@1/5/10 (percent), median and mean rank (1-based) of 0-based ranks.

  `r_K = 100 * |{q : rank_q < K}| / n`,  `medr = floor(median(rank)) + 1`,
  `meanr = mean(rank) + 1`.

  >>> summarize_ranks([0, 0, 3, 12])
  {'r1': 50.0, 'r5': 75.0, 'r10': 75.0, 'medr': 2.0, 'meanr': 4.75}
  """
  ranks = np.asarray(ranks)
  if ranks.ndim != 1 or ranks.size == 0:
    raise ValueError(f"`ranks` must be a non-empty 1-D array, got shape {ranks.shape}.")
  if (ranks < 0).any():
    raise ValueError("`ranks` must be 0-based (>= 0); got a negative rank.")
  n = ranks.size
  result = {f"r{k}": 100.0 * np.count_nonzero(ranks < k) / n for k in RECALL_KS}
  result["medr"] = float(np.floor(np.median(ranks)) + 1)
  result["meanr"] = float(ranks.mean() + 1)  # integer sum is exact in float64
  return {k: float(v) for k, v in result.items()}


def i2t(sims, *, captions_per_image: int = 5,
        ties: str = "optimistic") -> dict[str, float]:
  """Image-to-text retrieval metrics: dict(r1, r5, r10, medr, meanr).

  An image query is answered when any of its `captions_per_image` captions is
  retrieved: its rank is that of its best-ranked caption (see `i2t_ranks`).

  >>> import numpy as np
  >>> sims = np.eye(2).repeat(5, axis=1)   # each image prefers its own captions
  >>> i2t(sims)
  {'r1': 100.0, 'r5': 100.0, 'r10': 100.0, 'medr': 1.0, 'meanr': 1.0}

  Args:
    sims: [N_images, N_images * captions_per_image] similarities (NumPy or JAX).
    captions_per_image: captions per image; caption c belongs to image c // it.
    ties: "optimistic" or "official" (see the module docstring).
  """
  return summarize_ranks(i2t_ranks(sims, captions_per_image=captions_per_image,
                                   ties=ties))


def t2i(sims, *, captions_per_image: int = 5,
        ties: str = "optimistic") -> dict[str, float]:
  """Text-to-image retrieval metrics: dict(r1, r5, r10, medr, meanr).

  Every caption is a query; its rank is that of its own image (see `t2i_ranks`).

  >>> import numpy as np
  >>> t2i(np.eye(2).repeat(5, axis=1))
  {'r1': 100.0, 'r5': 100.0, 'r10': 100.0, 'medr': 1.0, 'meanr': 1.0}
  """
  return summarize_ranks(t2i_ranks(sims, captions_per_image=captions_per_image,
                                   ties=ties))


def rsum(i2t_result, t2i_result) -> float:
  """RSUM = R@1 + R@5 + R@10 of image-to-text plus the same of text-to-image.

  >>> rsum({'r1': 50.0, 'r5': 80.0, 'r10': 90.0}, {'r1': 40.0, 'r5': 70.0, 'r10': 80.0})
  410.0
  """
  try:
    return float(sum(result[f"r{k}"] for result in (i2t_result, t2i_result) for k in RECALL_KS))
  except KeyError as e:
    raise ValueError(f"`i2t_result` and `t2i_result` must be the dicts returned by "
                     f"i2t()/t2i() (keys r1, r5, r10); missing {e}.") from None
