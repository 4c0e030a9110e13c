"""Ablation: the batch size (the list S-NDCG ranks grows with it); epochs fixed, so fewer steps for larger batches.

On the demo (configs/synthetic_scenes.py), over seeds (default 3; ":N" for N):

  python -m itr_jax.sweep --config=configs/ablations/batch_size.py \
      --sweep_dir=sweeps/batch_size --parallel=2 --report
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.product([h.sweep("train.batch_size", [32, 64, 128, 256]), h.seeds(arg)])
