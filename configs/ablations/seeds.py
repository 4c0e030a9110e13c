"""Seed variance of the demo as configured (default 5 seeds; ":N" for N).

  python -m itr_jax.sweep --config=configs/ablations/seeds.py --sweep_dir=sweeps/seeds
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.seeds(arg, default=5)
