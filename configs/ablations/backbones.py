"""Ablation: the paper's backbones (VSE++, VSE∞, SGR, SAF) × {triplet, triplet + S-NDCG}.

The paper's main claim — RSC + S-NDCG helps any pairwise backbone — on the
synthetic-scenes demo, over seeds (default 1; ":N" for N). Each backbone
starts from its demo config (configs/synthetic_scenes.py,
synthetic_scenes_vse_infty.py, synthetic_scenes_sgraf.py:sgr|saf: its
official recipe at small dims), shortened so the 8 runs fit ~1 h on a
shared 2-core CPU: 3 epochs for VSE++ and SGR, 2 for VSE∞ and SAF (lr ×0.1
after 2) instead of 10, and SGR / SAF at 64-d joint space and 16-d
similarity vectors (their demo: 128 / 32).
λ = 0 is each backbone's official triplet loss, λ = 0.5 the paper's mix.
Evaluate the SGRAF ensemble of a λ afterwards:

  python -m itr_jax.sweep --config=configs/ablations/backbones.py \
      --sweep_dir=sweeps/backbones --parallel=2 --report
  python -m itr_jax.evaluate --workdir="sweeps/backbones/<sgr member>" \
      --ensemble="sweeps/backbones/<saf member>"
"""
import os

from itr_jax.sweeps import declaration
from itr_jax.training import workdir as workdir_lib

_CONFIGS = os.path.join(os.path.dirname(__file__), "..")
# backbone: (demo config file, its ":arg")
BACKBONES = {"vse": ("synthetic_scenes.py", None),
             "vse_infty": ("synthetic_scenes_vse_infty.py", None),
             "sgr": ("synthetic_scenes_sgraf.py", "sgr"),
             "saf": ("synthetic_scenes_sgraf.py", "saf")}
# Epochs per backbone (lr x0.1 after epoch 2): what fitted the shared machine
# (SGR ran first at 3; SAF and VSE-infinity, slower per step than VSE++,
# were cut to 2 to finish in time).
EPOCHS = {"vse": 3, "vse_infty": 2, "sgr": 3, "saf": 2}
LR_UPDATE = 2
SGRAF_DIMS = {"model.embed_size": 64, "model.sim_dim": 16}


def backbone_config(name: str):
  """The demo config of backbone `name`, shortened for this ablation."""
  path, arg = BACKBONES[name]
  c = declaration.load_config_file(os.path.join(_CONFIGS, path), arg)
  c.train.num_epochs, c.optim.lr_update = EPOCHS[name], LR_UPDATE
  if name in ("sgr", "saf"):
    for field, value in SGRAF_DIMS.items():
      group, leaf = field.split(".")
      c[group][leaf] = value
  return c


def get_config(arg=None):
  del arg  # only the number of seeds, used by get_hyper
  return backbone_config("vse")


def backbone_overrides(name: str) -> dict:
  """The fields where backbone `name`'s config differs from get_config()'s."""
  base = workdir_lib.flatten(get_config().to_dict())
  own = workdir_lib.flatten(backbone_config(name).to_dict())
  return {k: v for k, v in own.items() if base.get(k) != v}


def get_hyper(h, arg=None):
  # The SGRAF members first: they take longest. Each member names only the
  # fields its backbone changes (all of them would exceed a file name).
  order = ("sgr", "saf", "vse_infty", "vse")
  return h.product([h.chain([[backbone_overrides(n)] for n in order]),
                    h.sweep("loss.weight", [0.0, 0.5]), h.seeds(arg, default=1)])
