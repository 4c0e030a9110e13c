"""Ablation: image pooling over regions: max (VSE++) vs GPO (VSE-infinity).

On the demo (configs/synthetic_scenes.py), over seeds (default 3; ":N" for N):

  python -m itr_jax.sweep --config=configs/ablations/pooling.py \
      --sweep_dir=sweeps/pooling --parallel=2 --report
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_scenes.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return declaration.load_config_file(_DEMO)


def get_hyper(h, arg=None):
  return h.product([h.sweep("model.pooling", ["max", "gpo"]), h.seeds(arg)])
