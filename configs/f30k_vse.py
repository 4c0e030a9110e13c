"""Flickr30K, BUTD precomputed features (36 x 2048 regions), VSE++ backbone.

Variants after the colon: `sndcg` (the paper: triplet + S-NDCG, lambda = 0.5),
`triplet` (baseline), `sndcg_only`. Point data.data_dir at the SCAN/VSE++
`f30k_precomp` folder ({split}_ims.npy, {split}_caps.txt, {split}_caps_emb.npy):

  python -m itr_jax.train --config=configs/f30k_vse.py:sndcg \
      --config.data.data_dir=/path/to/f30k_precomp --workdir=workdirs/f30k_sndcg
"""
from itr_jax.training import defaults


def get_config(variant: str = "sndcg"):
  return defaults.paper_vse_config(test_split="test", variant=variant)
