"""MS-COCO, BUTD precomputed features (36 x 2048 regions), SGRAF's SAF backbone.

The official SAF recipe (Paranioar/SGRAF): Adam 2e-4, batch 128, clip 2,
margin 0.2, hardest negatives from the first step; see
`defaults.paper_sgraf_config`. Variants after the colon: `sndcg` (triplet +
S-NDCG, lambda = 0.5), `triplet` (the official SGRAF loss), `sndcg_only`.
Test split: testall (5000 images, 5-fold 1K and 5K protocols). The SGRAF ensemble averages an SGR and an SAF run:

  python -m itr_jax.train --config=configs/coco_saf.py:sndcg \
      --config.data.data_dir=/path/to/coco_precomp --workdir=workdirs/coco_saf_sndcg
  python -m itr_jax.evaluate --workdir=workdirs/coco_sgr_sndcg --ensemble=workdirs/coco_saf_sndcg
"""
from itr_jax.training import defaults


def get_config(variant: str = "sndcg"):
  return defaults.paper_sgraf_config("coco", "saf", variant)
