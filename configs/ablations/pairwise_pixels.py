"""Ablation on the pixel demo: pairwise loss x listwise weight x seeds.

loss.pairwise in {triplet, infonce, sigmoid} x loss.weight (λ) in {0, 0.5}
on configs/synthetic_pixels.py (the tiny dual encoder from rendered images),
over seeds (default 3; ":N" for N):

  python -m itr_jax.sweep --config=configs/ablations/pairwise_pixels.py \
      --sweep_dir=sweeps/pairwise_pixels --parallel=2 --report

Needs a trainer with loss.pairwise (the contrastive losses); without it the
sweep stops at declaration with one sentence saying so.
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "..", "synthetic_pixels.py")


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  config = declaration.load_config_file(_DEMO)
  if "pairwise" not in config.loss:
    raise ValueError("configs/ablations/pairwise_pixels.py sweeps loss.pairwise, "
                     "which this installation's trainer does not have yet")
  return config


def get_hyper(h, arg=None):
  # Seeds outermost: members run seed by seed, so an interrupted sweep has
  # every cell at the same number of seeds.
  return h.product([h.seeds(arg), h.sweep("loss.pairwise", ["triplet", "infonce", "sigmoid"]),
                    h.sweep("loss.weight", [0.0, 0.5])])
