"""Demo: SGRAF's SGR or SAF + S-NDCG on the embedded synthetic-scenes dataset.

The default demo (configs/synthetic_scenes.py) with the backbone after the
colon, `sgr` or `saf`, at small dimensions (64-d words, 128-d regions/words,
32-d similarity vectors) so that the cross-attention scorer trains in
minutes on 2 CPU cores; the scenes have a fixed region count
(data.synthetic.regions = 12), which SGRAF's visual self-attention
BatchNorm needs. Train both and evaluate the SGRAF ensemble:

  python -m itr_jax.train --config=configs/synthetic_scenes_sgraf.py:sgr --workdir=workdirs/demo_sgr
  python -m itr_jax.train --config=configs/synthetic_scenes_sgraf.py:saf --workdir=workdirs/demo_saf
  python -m itr_jax.evaluate --workdir=workdirs/demo_sgr --ensemble=workdirs/demo_saf
"""
import os

from itr_jax.sweeps import declaration
from itr_jax.training import defaults

_DEMO = os.path.join(os.path.dirname(__file__), "synthetic_scenes.py")


def get_config(module: str = "sgr"):
  if module not in ("sgr", "saf"):
    raise ValueError(f"Unknown variant {module!r}: use "
                     "configs/synthetic_scenes_sgraf.py:sgr or :saf.")
  c = defaults.sgraf_model(declaration.load_config_file(_DEMO), module)
  c.model.word_dim = 64
  c.model.embed_size = 128
  c.model.sim_dim = 32
  c.optim.learning_rate = 1e-3  # 10 epochs: higher than the official 2e-4
  return c
