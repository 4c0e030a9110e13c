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
              "hard_ndcg_i2t", "hard_ndcg_t2i", "grad_norm", "steps_per_second",
              "clip_rate"):
    assert np.isfinite(train[-1][key]), key
  assert all(0 <= r["clip_rate"] <= 1 for r in train)
  saved = workdir_lib.load_config(workdir)
  assert saved.loss.tau == config.loss.tau
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  ckpt = checkpointing.Checkpoints(workdir, keep=2)
  steps = ckpt.manager.all_steps()
  # Latest two (every 7 steps and every epoch end) plus the best by dev RSUM.
  assert TOTAL_STEPS in steps and TOTAL_STEPS - 1 in steps and best["best_step"] in steps
  assert len(steps) <= 3
  ckpt.close()


# Covered in the default run by test_reliability's SIGKILL-at-several-points
# and SIGTERM tests (bitwise-equal parameters after resuming).
@pytest.mark.slow
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


def test_run_start_records_how_many_captions_max_len_truncates(tiny_run):
  from itr_jax.data import precomputed, vocab  # pylint: disable=import-outside-toplevel
  from itr_jax.training import experiment_data  # pylint: disable=import-outside-toplevel
  config, workdir, _, _ = tiny_run
  [record] = [r for r in reporting.read_metrics(workdir) if r["kind"] == "data"]
  captions = precomputed.read_captions(os.path.join(
      experiment_data.data_dir(config), "train_caps.txt"))
  # <start> + words + <end> longer than max_len.
  want = sum(len(vocab.tokenize(c)) + 2 > config.data.max_len for c in captions)
  assert record["step"] == 0 and record["train_captions"] == len(captions) == 240
  assert record["truncated_train_captions"] == want


def test_keeping_the_last_partial_batch_trains_and_resumes_exactly(tiny_run, tmp_path):
  """240 captions at batch 32 on 8 devices: 7 full batches + one of 16 per
  epoch; a run resumed after epoch 1 ends with bitwise the same parameters."""
  _, _, _, data_dir = tiny_run

  def config(num_epochs):
    c = tiny_config(data_dir, num_epochs=num_epochs)
    c.data.drop_last, c.train.batch_size = False, 32
    c.train.checkpoint_every_steps = 1000  # epoch ends only
    return c

  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  trainer.train_and_evaluate(config(2), straight)
  trainer.train_and_evaluate(config(1), resumed)
  trainer.train_and_evaluate(config(2), resumed)
  jax.tree.map(np.testing.assert_array_equal, params_at(straight, 16), params_at(resumed, 16))
  dev = [r for r in reporting.read_metrics(straight) if r["kind"] == "dev"]
  assert [(r["step"], r["epoch"]) for r in dev] == [(0, 0.0), (8, 1.0), (16, 2.0)]


def test_official_ties_in_the_evaluation_report():
  from itr_jax.evaluation import evaluate  # pylint: disable=import-outside-toplevel
  emb = np.ones((4, 3), np.float32)  # collapsed embeddings: every score tied
  # Captions 0-4 relevant to every image: the lowest columns rank first when
  # ties go by index, last in the official reversed argsort order.
  kw = dict(captions_per_image=5, rsc_relevance=np.tile(np.arange(20) < 5, (4, 1)))
  optimistic = evaluate.retrieval_report(emb, np.ones((20, 3), np.float32), **kw)
  official = evaluate.retrieval_report(emb, np.ones((20, 3), np.float32),
                                       ties="official", **kw)
  assert optimistic["i2t_r1"] == optimistic["t2i_r1"] == 100.0
  assert official["i2t_r1"] == 25.0 and official["t2i_r1"] == 25.0
  assert optimistic["rsc_ndcg_i2t"] == 1.0 > official["rsc_ndcg_i2t"]
