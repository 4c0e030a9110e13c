"""ECCV Caption, CxC and COCO 1K/5K metrics through the `eccv_caption` package.

The package (Chun et al., 2022) scores ranked lists of COCO ids against its
own annotations of the COCO 5K (Karpathy) test split:

  * ECCV Caption: machine-and-human verified positives for 1261 image and 1332
    caption queries; mAP@R, R-Precision and R@1 (also R@K).
  * CxC (Crisscrossed Captions) positives; R@K.
  * Original COCO positives; 5K R@K and 1K R@K (5 folds of 1000 images).

`eccv_caption_metrics` turns a similarity matrix into the ranked lists the
package reads, `{query id: [retrieved ids, best first]}`, truncated to the
shortest length that keeps every requested metric exact:

  * mAP@R and R-Precision of a query with R positives read the first R
    retrieved items, so the lists hold max R (48 for i2t, 19 for t2i in the
    shipped annotations);
  * R@K reads K items;
  * COCO 1K R@K keeps the items of the query's fold, in list order: each list
    is therefore extended with the query's top-K within its fold (a ranked
    union), since the 5K top-K alone may hold fewer than K fold items.

The metrics are computed by the package itself (its public per-metric
methods), not re-implemented here.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from itr_jax.metrics import _checks
from itr_jax.metrics.topk import top_k_indices

RECALL_FAMILIES = ("coco_1k", "coco_5k", "cxc", "eccv")
RANKING_METRICS = ("eccv_map_at_r", "eccv_rprecision")
VALID_METRICS = (tuple(f"{family}_r1" for family in RECALL_FAMILIES)
                 + tuple(f"{family}_recalls" for family in RECALL_FAMILIES)
                 + RANKING_METRICS + ("pmrp",))
# The metrics reported by the Listwise_ITR paper (its evaluation script).
DEFAULT_METRICS = ("eccv_map_at_r", "eccv_rprecision", "eccv_r1",
                   "coco_1k_recalls", "coco_5k_recalls", "cxc_recalls")
DIRECTIONS = ("i2t", "t2i")


def load_annotations():
  """A fresh `eccv_caption.Metrics` holding the package's shipped annotations."""
  with warnings.catch_warnings():
    # The package warns at import when the optional `ujson` is missing.
    warnings.simplefilter("ignore", UserWarning)
    from eccv_caption import Metrics  # pylint: disable=import-outside-toplevel
  return Metrics()


def _parse_targets(target_metrics, recall_ks):
  """{(family, K)} recalls to compute and the set of other metric names."""
  if isinstance(target_metrics, str):
    target_metrics = (target_metrics,)
  unknown = sorted(set(target_metrics) - set(VALID_METRICS))
  if unknown or not target_metrics:
    raise ValueError(f"`target_metrics` must be a non-empty subset of {VALID_METRICS}; "
                     f"got {list(target_metrics)} (unknown: {unknown}).")
  recall_ks = tuple(_checks.check_positive_int(K, "recall_ks") for K in recall_ks)
  recalls = set()
  for family in RECALL_FAMILIES:
    if f"{family}_recalls" in target_metrics:
      if not recall_ks:
        raise ValueError(f"`recall_ks` is empty but {family}_recalls was requested.")
      recalls.update((family, K) for K in recall_ks)
    if f"{family}_r1" in target_metrics:
      recalls.add((family, 1))
  others = set(target_metrics) & set(RANKING_METRICS + ("pmrp",))
  return sorted(recalls), others


def _check_ids(ids, expected: set, count: int, name: str) -> np.ndarray:
  ids = np.asarray(ids)
  if ids.ndim != 1 or ids.shape[0] != count or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"`{name}` must be a 1-D integer array of {count} COCO ids (one per "
                     f"{'row' if name == 'image_ids' else 'column'} of `sims`), got "
                     f"shape {ids.shape} dtype {ids.dtype}.")
  given = set(ids.tolist())
  if len(given) != count:
    raise ValueError(f"`{name}` holds duplicate ids ({count - len(given)} repeats).")
  if given != expected:
    unknown = sorted(given - expected)
    missing = sorted(expected - given)
    raise ValueError(
        f"`{name}` must be exactly the {len(expected)} ids of the eccv_caption "
        f"annotations (the COCO 5K Karpathy test split): {len(unknown)} given ids are "
        f"not annotated (e.g. {unknown[:5]}), {len(missing)} annotated ids are missing "
        f"(e.g. {missing[:5]}). Evaluate on the full COCO 5K test split with COCO ids.")
  return ids


def _max_positives(gts) -> int:
  return max((len(set(items)) for direction in DIRECTIONS
              for items in gts[direction].values()), default=1)


def _fold_of_ids(annotations):
  """(caption id -> fold, image id -> fold) of the package's COCO 1K protocol."""
  caption_ids = np.asarray(annotations.coco_ids)
  fold_size = len(caption_ids) // 5
  caption_fold = {int(cid): i // fold_size for i, cid in enumerate(caption_ids[:5 * fold_size])}
  image_fold = {annotations.coco_gts["t2i"][cid][0]: fold for cid, fold in caption_fold.items()}
  return caption_fold, image_fold


def _ranked_union(scores: np.ndarray, first: np.ndarray, second: np.ndarray) -> list:
  """Per row: the columns in `first` or `second`, by descending score then index."""
  cols = np.concatenate([first, second], axis=1)
  values = np.take_along_axis(scores, cols, axis=1)
  order = np.lexsort((cols, -values), axis=1)
  cols = np.take_along_axis(cols, order, axis=1)
  repeat = np.zeros(cols.shape, dtype=bool)
  repeat[:, 1:] = cols[:, 1:] == cols[:, :-1]  # equal columns are now adjacent
  return [row[~mask] for row, mask in zip(cols, repeat)]


def _fold_top_k(sims, image_fold, caption_fold, k):
  """Top-k candidates of every query within its own COCO 1K fold (k is capped
  at the smallest fold, so every query gets the same number)."""
  folds = [(np.flatnonzero(image_fold == f), np.flatnonzero(caption_fold == f))
           for f in np.unique(image_fold)]
  k_i2t = min([k] + [cols.size for _, cols in folds])
  k_t2i = min([k] + [rows.size for rows, _ in folds])
  i2t = np.empty((sims.shape[0], k_i2t), dtype=np.intp)
  t2i = np.empty((sims.shape[1], k_t2i), dtype=np.intp)
  for rows, cols in folds:
    block = sims[np.ix_(rows, cols)]
    i2t[rows] = cols[top_k_indices(block, k_i2t)]
    t2i[cols] = rows[top_k_indices(block.T, k_t2i)]
  return i2t, t2i


def eccv_caption_metrics(sims, image_ids, caption_ids, *,
                         target_metrics=DEFAULT_METRICS,
                         recall_ks=(1, 5, 10),
                         k: int | None = None,
                         annotations=None) -> dict[str, float]:
  """ECCV Caption / CxC / COCO metrics of a COCO 5K similarity matrix, in percent.

  Retrieval is ranked by `sims` (descending; ties by lower row/column index,
  see `top_k_indices`) and scored by `eccv_caption`. Keys are
  `{metric}_{direction}`, e.g. `eccv_map_at_r_i2t`, `cxc_r1_t2i`,
  `coco_1k_r5_i2t`; `{family}_recalls` expands to `{family}_r{K}` for K in
  `recall_ks`.

  Example (needs the full 5000 x 25000 test matrix, so not run here)::

    sims = img_emb @ cap_emb.T                      # rows: images, cols: captions
    eccv_caption_metrics(sims, coco_image_ids, coco_caption_ids)
    # {'coco_1k_r1_i2t': ..., 'coco_1k_r1_t2i': ..., ..., 'eccv_map_at_r_i2t': ...}

  Args:
    sims: [5000, 25000] similarities (NumPy or JAX), any row/column order.
    image_ids: [5000] COCO image id of each row.
    caption_ids: [25000] COCO caption (annotation) id of each column.
    target_metrics: names from `VALID_METRICS` (as in the package).
    recall_ks: the K of every `{family}_recalls` metric.
    k: length of the ranked lists; None picks the shortest exact length
      (module docstring). A smaller k would truncate and is an error.
    annotations: an `eccv_caption.Metrics` (e.g. built with `extra_file_dir`
      for PMRP, or reused across calls); default `load_annotations()`.

  Returns:
    flat dict of floats in percent (the package's fractions x 100).
  """
  recalls, others = _parse_targets(target_metrics, recall_ks)
  sims = _checks.as_score_matrix(sims, "sims")
  annotations = load_annotations() if annotations is None else annotations
  image_ids = _check_ids(image_ids, set(annotations.coco_gts["i2t"]), sims.shape[0],
                         "image_ids")
  caption_ids = _check_ids(caption_ids, set(annotations.coco_gts["t2i"]), sims.shape[1],
                           "caption_ids")
  if "pmrp" in others and not annotations.pm_gts:
    raise ValueError("`pmrp` needs the Plausible Match annotations: download them and pass "
                     "annotations=eccv_caption.Metrics(extra_file_dir=...).")

  needed = max([K for _, K in recalls], default=1)
  if others & set(RANKING_METRICS):
    needed = max(needed, _max_positives(annotations.eccv_gts))
  if "pmrp" in others:
    needed = max(needed, _max_positives(annotations.pm_gts))
  if k is None:
    k = needed
  elif _checks.check_positive_int(k, "k") < needed:
    raise ValueError(f"`k`={k} is too short: the requested metrics read up to {needed} "
                     f"retrieved items per query; pass k >= {needed} or k=None.")

  i2t_top = top_k_indices(sims, k)
  t2i_top = top_k_indices(sims.T, k)
  fold_ks = [K for family, K in recalls if family == "coco_1k"]
  if fold_ks:
    caption_fold, image_fold = _fold_of_ids(annotations)
    fold_i2t, fold_t2i = _fold_top_k(
        sims, np.array([image_fold[i] for i in image_ids.tolist()]),
        np.array([caption_fold[c] for c in caption_ids.tolist()]), max(fold_ks))
    i2t_top = _ranked_union(sims, i2t_top, fold_i2t)
    t2i_top = _ranked_union(sims.T, t2i_top, fold_t2i)
  retrieved = {
      "i2t": dict(zip(image_ids.tolist(), (caption_ids[row].tolist() for row in i2t_top))),
      "t2i": dict(zip(caption_ids.tolist(), (image_ids[row].tolist() for row in t2i_top))),
  }

  scores = {}
  # The package's mAP@R loop shows a tqdm bar whatever its `verbose` says.
  with contextlib.redirect_stderr(io.StringIO()):
    for family, K in recalls:
      values = getattr(annotations, f"{family}_recalls")(retrieved, "all", K=K)
      scores.update({f"{family}_r{K}_{d}": values[d] for d in DIRECTIONS})
    if others & set(RANKING_METRICS):
      for name, values in annotations.eccv_metrics(retrieved, "all").items():
        if name in others:
          scores.update({f"{name}_{d}": values[d] for d in DIRECTIONS})
    if "pmrp" in others:
      values = annotations.pmrp(retrieved, "all")
      scores.update({f"pmrp_{d}": values[d] for d in DIRECTIONS})
  return {name: 100.0 * float(value) for name, value in scores.items()}
