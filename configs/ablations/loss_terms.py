"""Ablation: which loss terms? Triplet only (λ=0), S-NDCG only (λ=1), both (λ=0.5).

The paper's central comparison, on the demo (configs/synthetic_scenes.py)
with its budget, over seeds (default 3; ":N" for N seeds):

  python -m itr_jax.sweep --config=configs/ablations/loss_terms.py \
      --sweep_dir=sweeps/loss_terms --parallel=2 --report
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.product([h.sweep("loss.weight", [0.0, 0.5, 1.0]), h.seeds(arg)])
