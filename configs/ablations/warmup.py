"""Ablation: warm-up epochs with the sum-over-negatives triplet (VSE++'s easier
start), for triplet only (λ = 0) and triplet + S-NDCG (λ = 0.5).

On the demo (configs/synthetic_scenes.py), over seeds (default 3; ":N" for N):

  python -m itr_jax.sweep --config=configs/ablations/warmup.py \
      --sweep_dir=sweeps/warmup --parallel=2 --report
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.product([h.sweep("train.warmup_epochs", [0, 2]),
                    h.sweep("loss.weight", [0.0, 0.5]), h.seeds(arg)])
