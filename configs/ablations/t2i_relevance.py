"""Ablation: text-to-image relevance: the paper's convention vs the transpose of the image-to-text matrix.

On the demo (configs/synthetic_scenes.py), over seeds (default 3; ":N" for N):

  python -m itr_jax.sweep --config=configs/ablations/t2i_relevance.py \
      --sweep_dir=sweeps/t2i_relevance --parallel=2 --report
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.product([h.sweep("loss.t2i_relevance", ["paper", "transpose"]), h.seeds(arg)])
