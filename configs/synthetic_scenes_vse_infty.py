"""Demo: VSE-infinity + S-NDCG on the embedded synthetic-scenes dataset.

The demo (configs/synthetic_scenes.py, same small dims) with VSE-infinity's
backbone and recipe (`defaults.vse_infty_recipe`: region MLP + GPO, BiGRU +
GPO, AdamW, warm-up epoch, size augmentation), its 25-epoch schedule
shortened to the demo's 10 epochs (lr x0.1 after 6, VSE-infinity's 15/25).
Minutes on 2 CPU cores.

  python -m itr_jax.train --config=configs/synthetic_scenes_vse_infty.py --workdir=workdirs/demo_vse_infty
"""
import os

from itr_jax.sweeps import declaration
from itr_jax.training import defaults

_DEMO = os.path.join(os.path.dirname(__file__), "synthetic_scenes.py")


def get_config():
  c = defaults.vse_infty_recipe(declaration.load_config_file(_DEMO))
  c.train.num_epochs = 10
  c.optim.lr_update = 6
  return c
