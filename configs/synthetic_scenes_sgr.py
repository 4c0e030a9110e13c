"""Demo: SGRAF's SGR + S-NDCG on the embedded synthetic-scenes dataset.

Small dimensions (64-d words, 128-d regions/words, 32-d similarity vectors)
so that the cross-attention scorer trains in minutes on 2 CPU cores; the
scenes have a fixed region count (data.synthetic.regions = 12), which SGRAF's
visual self-attention BatchNorm needs. Ensemble with the other module:

  python -m itr_jax.train --config=configs/synthetic_scenes_sgr.py --workdir=workdirs/demo_sgr
  python -m itr_jax.evaluate --workdir=workdirs/demo_sgr --ensemble=workdirs/demo_saf
"""
from itr_jax.training import defaults


def get_config():
  c = defaults.base_config()
  c.data.name = "synthetic_scenes"
  c.data.data_dir = "data/synthetic_scenes"
  c.data.max_len = 24
  defaults.sgraf_model(c, "sgr")
  c.model.word_dim = 64
  c.model.embed_size = 128
  c.model.sim_dim = 32
  c.optim.learning_rate = 2e-4 * 5  # few epochs: a higher rate than the official
  c.train.batch_size = 128
  c.train.num_epochs = 10
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 200
  c.optim.lr_update = 8
  c.eval.batch_size = 500
  return c
