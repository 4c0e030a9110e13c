"""MS-COCO, BUTD precomputed features (36 x 2048 regions), VSE++ backbone.

Variants after the colon: `sndcg` (the paper: triplet + S-NDCG, lambda = 0.5),
`triplet` (baseline), `sndcg_only`. Point data.data_dir at the SCAN/VSE++
`coco_precomp` folder; the test split `testall` (5000 images) is reported with
both the 5-fold 1K and the 5K protocols:

  python -m itr_jax.train --config=configs/coco_vse.py:sndcg \
      --config.data.data_dir=/path/to/coco_precomp --workdir=workdirs/coco_sndcg
"""
from itr_jax.training import defaults


def get_config(variant: str = "sndcg"):
  return defaults.paper_vse_config(test_split="testall", variant=variant)
