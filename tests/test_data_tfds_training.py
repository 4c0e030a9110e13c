"""Training and evaluation from TFDS records equal those from the .npy files."""
import jax
import numpy as np
import pytest

from itr_jax import evaluate as evaluate_cli
from itr_jax.data import synthetic_scenes
from itr_jax.data import tfds_builder
from itr_jax.training import trainer
from tiny_config import STEPS_PER_EPOCH, params_at, tiny_config


# ~45 s of CPU (two runs and their evaluations). In the default run,
# test_data_tfds's bitwise batch equality (same batches, deterministic step)
# and its experiment_data test cover the same path.
@pytest.mark.slow
def test_training_and_evaluation_from_tfds_equal_npy(tmp_path):
  data_dir = str(tmp_path / "data")
  npy_config = tiny_config(data_dir, num_epochs=1)
  synthetic_scenes.generate(data_dir, **npy_config.data.synthetic)
  npy_config.data.name = "precomputed"
  tfds_dir = str(tmp_path / "tfds")
  tfds_builder.convert(data_dir, tfds_dir)
  tfds_config = tiny_config("", num_epochs=1)
  tfds_config.data.name, tfds_config.data.tfds_data_dir = "tfds", tfds_dir

  runs = {}
  for name, config in (("npy", npy_config), ("tfds", tfds_config)):
    runs[name] = str(tmp_path / name)
    trainer.train_and_evaluate(config, runs[name])
  jax.tree.map(np.testing.assert_array_equal,
               params_at(runs["npy"], STEPS_PER_EPOCH),
               params_at(runs["tfds"], STEPS_PER_EPOCH))
  reports = {name: evaluate_cli.evaluate_run(workdir, "test")
             for name, workdir in runs.items()}
  assert reports["npy"]["full"] == reports["tfds"]["full"]
  assert 0 < reports["tfds"]["full"]["true_ndcg_t2i"] <= 1  # relevance read
