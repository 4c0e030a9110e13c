"""A tiny run end to end: train, evaluate, checkpoint, resume, evaluate the test split.

One session-scoped run (`run`, in conftest.py; a few seconds of training) is
shared by these tests and the reliability tests.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from itr_jax import evaluate as evaluate_cli
from itr_jax.training import checkpointing
from itr_jax.training import reporting
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib
from tiny_config import NUM_EPOCHS, STEPS_PER_EPOCH, TOTAL_STEPS, params_at, tiny_config


def test_training_improves_retrieval_over_untrained(tiny_run):
  _, workdir, best, _ = tiny_run
  dev = [r for r in reporting.read_metrics(workdir) if r["kind"] == "dev"]
  assert dev[0]["step"] == 0  # the untrained model's numbers are on record
  assert best["rsum"] > dev[0]["rsum"] + 20, (dev[0]["rsum"], best)
  assert dev[-1]["true_ndcg_i2t"] > dev[0]["true_ndcg_i2t"]


def test_logs_config_and_checkpoints_written(tiny_run):
  config, workdir, best, _ = tiny_run
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
  # Latest two (every 7 steps and every epoch end) plus the best by dev RSUM.
  assert TOTAL_STEPS in steps and TOTAL_STEPS - 1 in steps and best["best_step"] in steps
  assert len(steps) <= 3
  ckpt.close()


def test_resume_continues_to_the_same_parameters(tiny_run, tmp_path, capsys):
  config, workdir, _, data_dir = tiny_run
  resumed_dir = str(tmp_path / "resumed")
  trainer.train_and_evaluate(tiny_config(data_dir, num_epochs=NUM_EPOCHS - 3),
                             resumed_dir)
  capsys.readouterr()
  # Same workdir, longer schedule: resumes 3 epochs before the end.
  trainer.train_and_evaluate(tiny_config(data_dir), resumed_dir)
  # Said on the console, not only in the INFO log.
  assert f"Resumed from step {TOTAL_STEPS - 3 * STEPS_PER_EPOCH} in " in capsys.readouterr().out
  a = params_at(workdir, TOTAL_STEPS)
  b = params_at(resumed_dir, TOTAL_STEPS)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  train_steps = [r["step"] for r in reporting.read_metrics(resumed_dir)
                 if r["kind"] == "train"]
  assert train_steps == sorted(set(train_steps))  # no step trained twice


def test_incompatible_config_is_refused_then_moved_aside_with_fresh(tiny_run, tmp_path):
  config, _, _, data_dir = tiny_run
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


def test_evaluate_cli_reports_test_split(tiny_run):
  _, workdir, best, _ = tiny_run
  report = evaluate_cli.evaluate_run(workdir)
  assert report["checkpoint_step"] == best["best_step"]
  full = report["full"]
  assert 0 <= full["i2t_r1"] <= 100 and full["rsum"] > 0
  assert 0 < full["true_ndcg_t2i"] <= 1 and 0 < full["rsc_ndcg_i2t"] <= 1
  with open(os.path.join(workdir, "eval_test.json")) as f:
    assert json.load(f)["full"]["rsum"] == pytest.approx(full["rsum"])


def test_evaluate_cli_restores_onto_another_device_count(tiny_run):
  """The run trained on 8 (simulated) devices; evaluate it on 1."""
  _, workdir, _, _ = tiny_run
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run(
      [sys.executable, "-m", "itr_jax.evaluate", f"--workdir={workdir}",
       "--split=dev", "--checkpoint=latest"],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  latest = checkpointing.Checkpoints(workdir).latest_step()
  # Not the best checkpoint: named by its step.
  with open(os.path.join(workdir, f"eval_dev_step{latest}.json")) as f:
    report = json.load(f)
  final_dev = [r for r in reporting.read_metrics(workdir) if r["kind"] == "dev"][-1]
  assert report["checkpoint_step"] == final_dev["step"]
  assert report["full"]["rsum"] == pytest.approx(final_dev["rsum"], abs=1e-6)
