"""The tiny demo configuration shared by the end-to-end and reliability tests.

The demo config (configs/synthetic_scenes.py) shrunk to seconds of CPU work:
48 training images (240 captions, 10 steps per epoch at batch 24), 12 epochs:
enough steps for dev retrieval to rise clearly above the untrained model.
"""
import os

from ml_collections import config_dict

from itr_jax.sweeps import declaration

NUM_EPOCHS = 12
STEPS_PER_EPOCH = 10
TOTAL_STEPS = NUM_EPOCHS * STEPS_PER_EPOCH
DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "synthetic_scenes.py")

OVERRIDES = {
    "data.synthetic.num_train": 48, "data.synthetic.num_dev": 16,
    "data.synthetic.num_test": 16, "data.synthetic.regions": 4,
    "data.synthetic.feature_dim": 16, "data.max_len": 16,
    # TF-IDF caption embeddings: MiniLM would add ~5 s per generated dataset
    # (tests/test_data_synthetic.py covers the MiniLM path end to end).
    "data.synthetic.caption_encoder": "tfidf",
    "model.word_dim": 16, "model.embed_size": 32,
    "train.batch_size": 24, "train.log_every_steps": 5,
    "train.checkpoint_every_steps": 7,  # mid-epoch checkpoints too
    "train.keep_checkpoints": 2, "optim.learning_rate": 5e-3,
    "eval.batch_size": 32,
}


def tiny_config(data_dir: str, num_epochs: int = NUM_EPOCHS) -> config_dict.ConfigDict:
  config = declaration.load_config_file(DEMO_CONFIG)
  for path, value in {**OVERRIDES, "data.data_dir": data_dir,
                      "train.num_epochs": num_epochs}.items():
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def cli_flags(data_dir: str, num_epochs: int = NUM_EPOCHS) -> list[str]:
  """The same configuration as `python -m itr_jax.train` flags."""
  return [f"--config={DEMO_CONFIG}"] + [
      f"--config.{k}={v}" for k, v in {**OVERRIDES, "data.data_dir": data_dir,
                                        "train.num_epochs": num_epochs}.items()]


def params_at(workdir: str, step: int):
  """The parameters saved at `step` in `workdir` (as a plain tree)."""
  from itr_jax.training import checkpointing  # pylint: disable=import-outside-toplevel
  ckpt = checkpointing.Checkpoints(workdir, keep=OVERRIDES["train.keep_checkpoints"])
  restored = ckpt.manager.restore(step)
  ckpt.close()
  return restored["params"]
