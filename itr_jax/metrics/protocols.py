"""Evaluation protocols: full-set retrieval, COCO 5K and COCO 1K (5-fold).

All take `sims[i, c]` for image i and caption c, with caption c describing
image c // captions_per_image, and return a flat dict of floats:

  i2t_r1, i2t_r5, i2t_r10, i2t_medr, i2t_meanr,
  t2i_r1, t2i_r5, t2i_r10, t2i_medr, t2i_meanr, rsum

(`coco_1k_folds`: a list of such dicts, one per fold).
"""
from __future__ import annotations

import numpy as np

from itr_jax.metrics import _checks
from itr_jax.metrics.recall import i2t, rsum, t2i


def evaluate_retrieval(sims, *, captions_per_image: int = 5,
                       ties: str = "optimistic") -> dict[str, float]:
  """i2t and t2i Recall@1/5/10, medr, meanr and RSUM over the whole matrix.

  `ties`: "optimistic" or "official" (see `itr_jax.metrics.recall`).

  >>> import numpy as np
  >>> result = evaluate_retrieval(np.eye(3).repeat(5, axis=1))
  >>> result["i2t_r1"], result["t2i_meanr"], result["rsum"]
  (100.0, 1.0, 600.0)
  """
  image_to_text = i2t(sims, captions_per_image=captions_per_image, ties=ties)
  text_to_image = t2i(sims, captions_per_image=captions_per_image, ties=ties)
  result = {f"i2t_{name}": value for name, value in image_to_text.items()}
  result.update({f"t2i_{name}": value for name, value in text_to_image.items()})
  result["rsum"] = rsum(image_to_text, text_to_image)
  return result


def coco_5k(sims, *, captions_per_image: int = 5,
            ties: str = "optimistic") -> dict[str, float]:
  """COCO 5K: `evaluate_retrieval` on the full test split (5000 x 25000).

  The function does not insist on 5000 images, so that it also serves
  subsets; the caller passes the full split for the published protocol.
  """
  return evaluate_retrieval(sims, captions_per_image=captions_per_image, ties=ties)


def coco_1k_folds(sims, *, captions_per_image: int = 5, num_folds: int = 5,
                  ties: str = "optimistic") -> list[dict[str, float]]:
  """`evaluate_retrieval` of each of `num_folds` disjoint diagonal blocks.

  Fold f holds images [f*n, (f+1)*n) and their captions, n = N_images / folds;
  on the COCO 5K test split these are the standard 5 folds of 1000 images.

  >>> import numpy as np
  >>> [fold["i2t_r1"] for fold in coco_1k_folds(np.eye(10).repeat(5, axis=1))]
  [100.0, 100.0, 100.0, 100.0, 100.0]
  """
  sims, captions_per_image = _checks.check_sims_layout(sims, captions_per_image)
  num_folds = _checks.check_positive_int(num_folds, "num_folds")
  num_images = sims.shape[0]
  if num_images % num_folds:
    raise ValueError(f"`sims` has {num_images} images, not divisible into num_folds="
                     f"{num_folds} equal folds; COCO 1K expects 5000 images and 5 folds.")
  n = num_images // num_folds
  return [
      evaluate_retrieval(sims[f * n:(f + 1) * n,
                              f * n * captions_per_image:(f + 1) * n * captions_per_image],
                         captions_per_image=captions_per_image, ties=ties)
      for f in range(num_folds)
  ]


def coco_1k(sims, *, captions_per_image: int = 5, num_folds: int = 5,
            ties: str = "optimistic") -> dict[str, float]:
  """COCO 1K: metrics of `num_folds` disjoint blocks, averaged (VSE++ fold5).

  Every metric (medr and rsum included) is the mean of its per-fold values
  (`coco_1k_folds`).

  >>> import numpy as np
  >>> coco_1k(np.eye(10).repeat(5, axis=1))["t2i_r1"]
  100.0
  """
  folds = coco_1k_folds(sims, captions_per_image=captions_per_image,
                        num_folds=num_folds, ties=ties)
  return {key: float(np.mean([fold[key] for fold in folds])) for key in folds[0]}
