"""A tiny run end to end: train, evaluate, checkpoint, resume, evaluate the test split.

One module-scoped run (a few seconds of training) is shared by the tests
below, so the compiled train step and encoders are built once.
"""
import json
import os

import jax
import numpy as np
import pytest
from ml_collections import config_dict

from itr_jax import evaluate as evaluate_cli
from itr_jax.training import checkpointing
from itr_jax.training import reporting
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib


def tiny_config(data_dir: str, num_epochs: int = 3) -> config_dict.ConfigDict:
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "demo_config", os.path.join(os.path.dirname(__file__), "..", "configs",
                                  "synthetic_scenes.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.data.data_dir = data_dir
  c.data.synthetic.update(num_train=48, num_dev=16, num_test=16, regions=4,
                          feature_dim=16)
  c.data.max_len = 16
  c.model.word_dim = 16
  c.model.embed_size = 32
  c.train.batch_size = 24  # 240 captions: 10 steps per epoch
  c.train.num_epochs = num_epochs
  c.train.log_every_steps = 5
  c.train.checkpoint_every_steps = 7  # also mid-epoch checkpoints
  c.train.keep_checkpoints = 2
  c.optim.learning_rate = 2e-3
  c.eval.batch_size = 32
  return c


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("e2e")
  data_dir = str(root / "data")
  workdir = str(root / "run")
  config = tiny_config(data_dir)
  best = trainer.train_and_evaluate(config, workdir)
  return config, workdir, best, data_dir, root


def _params_of(workdir, config, step):
  ckpt = checkpointing.Checkpoints(workdir, keep=config.train.keep_checkpoints)
  restored = ckpt.manager.restore(step)
  ckpt.close()
  return restored["params"]


def test_training_improves_retrieval_over_untrained(run):
  _, workdir, best, _, _ = run
  dev = [r for r in reporting.read_metrics(workdir) if r["kind"] == "dev"]
  assert dev[0]["step"] == 0  # the untrained model's numbers are on record
  assert best["rsum"] > dev[0]["rsum"] + 20, (dev[0]["rsum"], best)
  assert dev[-1]["true_ndcg_i2t"] > dev[0]["true_ndcg_i2t"]


def test_logs_config_and_checkpoints_written(run):
  config, workdir, best, _, _ = run
  records = reporting.read_metrics(workdir)
  train = [r for r in records if r["kind"] == "train"]
  assert [r["step"] for r in train][:3] == [5, 7, 10]
  for key in ("loss", "pairwise", "listwise", "ndcg_i2t", "ndcg_t2i",
              "hard_ndcg_i2t", "hard_ndcg_t2i", "grad_norm", "steps_per_second"):
    assert np.isfinite(train[-1][key]), key
  saved = workdir_lib.load_config(workdir)
  assert saved.loss.tau == config.loss.tau
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  ckpt = checkpointing.Checkpoints(workdir, keep=2)
  steps = ckpt.manager.all_steps()
  # Latest two (28, 30) plus the best by dev RSUM.
  assert 30 in steps and 28 in steps and best["best_step"] in steps
  assert len(steps) <= 3
  ckpt.close()


def test_resume_continues_to_the_same_parameters(run, tmp_path):
  config, workdir, _, data_dir, _ = run
  resumed_dir = str(tmp_path / "resumed")
  trainer.train_and_evaluate(tiny_config(data_dir, num_epochs=2), resumed_dir)
  # Same workdir, longer schedule: resumes at step 20 and runs to 30.
  trainer.train_and_evaluate(tiny_config(data_dir, num_epochs=3), resumed_dir)
  a = _params_of(workdir, config, 30)
  b = _params_of(resumed_dir, config, 30)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  train_steps = [r["step"] for r in reporting.read_metrics(resumed_dir)
                 if r["kind"] == "train"]
  assert train_steps == sorted(set(train_steps))  # no step trained twice


def test_incompatible_config_is_refused_then_moved_aside_with_fresh(run, tmp_path):
  config, _, _, data_dir, _ = run
  workdir = str(tmp_path / "w")
  workdir_lib.prepare(workdir, tiny_config(data_dir))
  other = tiny_config(data_dir)
  other.loss.tau = 0.05
  with pytest.raises(ValueError, match=r"loss\.tau: 0\.01 -> 0\.05"):
    workdir_lib.prepare(workdir, other)
  workdir_lib.prepare(workdir, other, fresh=True)
  assert workdir_lib.load_config(workdir).loss.tau == 0.05
  previous = os.listdir(os.path.join(workdir, "previous_runs"))
  assert len(previous) == 1


def test_evaluate_cli_reports_test_split(run):
  _, workdir, best, _, _ = run
  report = evaluate_cli.evaluate_run(workdir)
  assert report["checkpoint_step"] == best["best_step"]
  full = report["full"]
  assert 0 <= full["i2t_r1"] <= 100 and full["rsum"] > 0
  assert 0 < full["true_ndcg_t2i"] <= 1 and 0 < full["rsc_ndcg_i2t"] <= 1
  with open(os.path.join(workdir, "eval_test.json")) as f:
    assert json.load(f)["full"]["rsum"] == pytest.approx(full["rsum"])
