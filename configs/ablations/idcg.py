"""Ablation: the S-NDCG normaliser: IDCG with tied ranks vs of the sorted relevance.

On the demo (configs/synthetic_scenes.py), over seeds (default 3; ":N" for N):

  python -m itr_jax.sweep --config=configs/ablations/idcg.py \
      --sweep_dir=sweeps/idcg --parallel=2 --report
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.product([h.sweep("loss.idcg", ["tied", "sorted"]), h.seeds(arg)])
