"""Default demo: VSE++ + S-NDCG on the embedded synthetic-scenes dataset.

Runs anywhere, no download: the dataset is generated (deterministically from
`data.synthetic.seed`) into `data.data_dir` on first use. A few minutes on 2 CPU cores.

  python -m itr_jax.train --config=configs/synthetic_scenes.py --workdir=workdirs/demo
"""
from itr_jax.training import defaults


def get_config():
  c = defaults.base_config()
  c.data.name = "synthetic_scenes"
  c.data.data_dir = "data/synthetic_scenes"
  c.data.max_len = 24

  # Small encoders so the demo trains in minutes on a laptop CPU.
  c.model.word_dim = 64
  c.model.embed_size = 256

  c.train.batch_size = 128
  c.train.num_epochs = 10
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 200
  c.optim.lr_update = 8
  c.eval.batch_size = 500
  return c
