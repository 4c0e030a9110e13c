"""Flickr30K, BUTD precomputed features (36 x 2048 regions), SGRAF's SGR backbone.

The official SGR recipe (Paranioar/SGRAF): Adam 2e-4, batch 128, clip 2,
margin 0.2, hardest negatives from the first step; see
`defaults.paper_sgraf_config`. Variants after the colon: `sndcg` (triplet +
S-NDCG, lambda = 0.5), `triplet` (the official SGRAF loss), `sndcg_only`.
Test split: test. The SGRAF ensemble averages an SGR and an SAF run:

  python -m itr_jax.train --config=configs/f30k_sgr.py:sndcg \
      --config.data.data_dir=/path/to/f30k_precomp --workdir=workdirs/f30k_sgr_sndcg
  python -m itr_jax.evaluate --workdir=workdirs/f30k_sgr_sndcg --ensemble=workdirs/f30k_saf_sndcg
"""
from itr_jax.training import defaults


def get_config(variant: str = "sndcg"):
  return defaults.paper_sgraf_config("f30k", "sgr", variant)
