"""Ablation: the listwise weight λ from 0 (triplet only) to 1 (S-NDCG only).

On the demo (configs/synthetic_scenes.py), over seeds (default 3; ":N" for N):

  python -m itr_jax.sweep --config=configs/ablations/weight.py \
      --sweep_dir=sweeps/weight --parallel=2 --report
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.product([h.sweep("loss.weight", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), h.seeds(arg)])
