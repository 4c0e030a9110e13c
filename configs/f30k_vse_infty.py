"""Flickr30K, BUTD precomputed features (36 x 2048 regions), VSE-infinity backbone.

VSE-infinity (woodfrog/vse_infty) with its recipe (see
`defaults.vse_infty_recipe`): region MLP + GPO image tower, BiGRU + GPO text
tower (or `,bert`: BERT + GPO), AdamW, 25 epochs, size augmentation. The
loss variant comes after the colon: `sndcg` (triplet + S-NDCG, lambda = 0.5),
`triplet` (baseline), `sndcg_only`; append `,bert` for the BERT tower:

  python -m itr_jax.train --config=configs/f30k_vse_infty.py:sndcg \
      --config.data.data_dir=/path/to/f30k_precomp --workdir=workdirs/f30k_vse_infty_sndcg
  python -m itr_jax.train --config=configs/f30k_vse_infty.py:triplet,bert ...
"""
from itr_jax.training import defaults


def get_config(arg: str = "sndcg"):
  return defaults.paper_vse_infty_config(test_split="test", arg=arg)
