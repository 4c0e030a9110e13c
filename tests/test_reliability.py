"""Preemption, exact resume after SIGKILL, checkpoint integrity, bad input, divergence.

The kill tests run `python -m itr_jax.train` as a real subprocess and kill it
from outside at whatever moment it has reached, so they exercise the same
path a preempted or crashed job takes.
"""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from itr_jax.data import testing as data_testing
from itr_jax.training import checkpointing
from itr_jax.training import reporting
from itr_jax.training import trainer
from tiny_config import TOTAL_STEPS, cli_flags, params_at, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_training(data_dir, workdir):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  return subprocess.Popen(
      [sys.executable, "-m", "itr_jax.train", f"--workdir={workdir}",
       *cli_flags(data_dir)], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_train_step(workdir, step, proc, timeout=240):
  """Blocks until metrics.jsonl has a train record at >= `step`."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    steps = [r["step"] for r in reporting.read_metrics(workdir) if r["kind"] == "train"]
    if steps and max(steps) >= step:
      return max(steps)
    if proc.poll() is not None:
      raise AssertionError(f"training exited early:\n{proc.stdout.read()}")
    time.sleep(0.05)
  raise AssertionError(f"no train step {step} within {timeout}s")


def test_sigkill_at_several_points_then_resume_gives_identical_parameters(
    tiny_run, tmp_path):
  config, reference_dir, _, data_dir = tiny_run
  workdir = str(tmp_path / "killed")
  killed_at = []
  for step in (15, 62):  # mid-epoch, between checkpoints (every 7 steps / epoch)
    proc = _start_training(data_dir, workdir)
    killed_at.append(_wait_for_train_step(workdir, step, proc))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  proc = _start_training(data_dir, workdir)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, output
  assert killed_at[0] >= 15 and killed_at[1] >= 62
  jax.tree.map(np.testing.assert_array_equal,
               params_at(reference_dir, TOTAL_STEPS), params_at(workdir, TOTAL_STEPS))
  train_steps = [r["step"] for r in reporting.read_metrics(workdir) if r["kind"] == "train"]
  assert train_steps == sorted(set(train_steps))


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(tiny_run, tmp_path):
  config, reference_dir, _, data_dir = tiny_run
  workdir = str(tmp_path / "preempted")
  proc = _start_training(data_dir, workdir)
  _wait_for_train_step(workdir, 43, proc)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, output
  assert "Preempted: saved a checkpoint at step" in output
  stopped = int(output.split("saved a checkpoint at step ")[1].split(";")[0])
  ckpt = checkpointing.Checkpoints(workdir, keep=2)
  assert ckpt.latest_step() == stopped and stopped < TOTAL_STEPS
  ckpt.close()
  # Resuming in-process finishes the run with the uninterrupted parameters.
  trainer.train_and_evaluate(tiny_config(data_dir), workdir)
  jax.tree.map(np.testing.assert_array_equal,
               params_at(reference_dir, TOTAL_STEPS), params_at(workdir, TOTAL_STEPS))


def _tiny_state(value):
  return train_state.TrainState.create(
      apply_fn=None, params={"w": jnp.full((3,), value)}, tx=optax.adam(1e-3))


def test_corrupted_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=3)
  for step in (1, 2, 3):
    ckpt.save(step, _tiny_state(float(step)).replace(step=step))
  # Damage every file of the newest checkpoint, as a half-written copy would be.
  for root, _, files in os.walk(os.path.join(ckpt.directory, "3")):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\0garbage")
  abstract = jax.eval_shape(lambda: _tiny_state(0.0))
  step, state = ckpt.restore_latest(abstract)
  assert step == 2 and float(state.params["w"][0]) == 2.0
  assert "cannot be restored" in caplog.text
  assert ckpt.manager.all_steps() == [1, 2]
  moved = os.listdir(os.path.join(str(tmp_path), "checkpoints_corrupted"))
  assert len(moved) == 1 and moved[0].startswith("3-")  # kept, not deleted
  ckpt.close()


def test_restore_latest_with_no_checkpoint(tmp_path):
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=1)
  assert ckpt.restore_latest(jax.eval_shape(lambda: _tiny_state(0.0))) == (None, None)
  with pytest.raises(ValueError, match="keep_checkpoints"):
    checkpointing.Checkpoints(str(tmp_path), keep=0)


def test_divergence_stops_with_the_step_and_term_and_keeps_good_checkpoints(
    tiny_run, tmp_path):
  _, _, _, data_dir = tiny_run
  config = tiny_config(data_dir)
  config.optim.learning_rate = 1e38  # parameters overflow after one update
  config.optim.grad_clip = 1e38
  config.train.checkpoint_every_steps = 1
  workdir = str(tmp_path / "diverged")
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"Non-finite values at step 2: .*loss=nan"):
    trainer.train_and_evaluate(config, workdir)
  ckpt = checkpointing.Checkpoints(workdir, keep=2)
  assert ckpt.manager.all_steps() == [1]  # step 2 was never saved
  ckpt.close()


# --- bad input: a clear error before anything is written ---------------------

def _dataset(tmp_path, **breakage):
  d = str(tmp_path / "data")
  for split in ("train", "dev"):
    data_testing.write_random_split(d, split, num_images=8, regions=3, feature_dim=4,
                                    seed=1 if split == "dev" else 0)
  return d


def _precomputed_config(data_dir):
  config = tiny_config(data_dir)
  config.data.name = "precomputed"
  config.data.max_len = 12
  config.train.batch_size = 8
  return config


def _break_features_rank(d):
  np.save(f"{d}/train_ims.npy", np.zeros((8, 4), np.float32))


def _break_features_dtype(d):
  np.save(f"{d}/train_ims.npy", np.zeros((8, 3, 4), np.int32))


def _break_caption_count(d):
  with open(f"{d}/train_caps.txt", "a") as f:
    f.write("one caption too many\n")


def _break_embedding_count(d):
  np.save(f"{d}/train_caps_emb.npy", np.zeros((39, 6), np.float32))


def _break_nan_features(d):
  images = np.load(f"{d}/train_ims.npy")
  images[5, 1, 2] = np.nan
  np.save(f"{d}/train_ims.npy", images)


def _break_inf_embeddings(d):
  emb = np.load(f"{d}/dev_caps_emb.npy")
  emb[3, 0] = np.inf
  np.save(f"{d}/dev_caps_emb.npy", emb)


def _break_empty_caption(d):
  with open(f"{d}/train_caps.txt") as f:
    lines = f.read().splitlines()
  lines[6] = "   "
  with open(f"{d}/train_caps.txt", "w") as f:
    f.write("\n".join(lines) + "\n")


def _break_missing_file(d):
  os.remove(f"{d}/dev_ims.npy")


def _break_unreadable_file(d):
  with open(f"{d}/train_ims.npy", "wb") as f:
    f.write(b"not a numpy file")


def _break_vocab(d):
  with open(f"{d}/vocab.json", "w") as f:
    f.write('{"word2idx": {"<pad>": 0, "dog": 1}, "idx2word": {"0": "<pad>", "1": "dog"}, "idx": 2}')


@pytest.mark.parametrize("breakage, message", [
    (_break_missing_file, r"missing .*dev_ims\.npy"),
    (_break_unreadable_file, r"cannot read .*train_ims\.npy"),
    (_break_features_rank, r"rank 3"),
    (_break_features_dtype, r"floats"),
    (_break_caption_count, r"41 captions|41"),
    (_break_embedding_count, r"39"),
    (_break_nan_features, r"NaN or Inf .*row 5"),
    (_break_inf_embeddings, r"NaN or Inf"),
    (_break_empty_caption, r"line 7 is an empty caption"),
    (_break_vocab, r"<start>|<end>|<unk>"),
])
def test_bad_data_is_refused_before_writing_anything(tmp_path, breakage, message):
  d = _dataset(tmp_path)
  breakage(d)
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(_precomputed_config(d), workdir)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize("field, value, message", [
    ("loss.tau", 0.0, r"config\.loss.*tau.*> 0"),
    ("loss.tau", -0.1, r"tau"),
    ("loss.weight", 1.5, r"weight.*\[0, 1\]"),
    ("loss.margin", -0.2, r"margin.*>= 0"),
    ("loss.idcg", "best", r"idcg"),
    ("loss.t2i_relevance", "rows", r"t2i_relevance"),
    ("loss.rsc_snap", None, r"rsc_snap must be True"),
    ("eval.ties", "pessimistic", r"config\.eval\.ties"),
    ("data.vocab_recipe", "scan", r"config\.data\.vocab_recipe"),
    ("train.batch_size", 1000, r"batch_size=1000 exceeds the 40 captions"),
])
def test_bad_hyperparameters_are_refused_before_writing_anything(
    tmp_path, field, value, message):
  config = _precomputed_config(_dataset(tmp_path))
  section, name = field.split(".")
  config[section][name] = value
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)


def test_unknown_config_key_is_refused_by_the_cli(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "itr_jax.train", f"--workdir={tmp_path / 'run'}",
       *cli_flags(str(tmp_path / "data")), "--config.loss.temperature=0.1"],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "temperature" in proc.stderr
  assert not os.path.exists(tmp_path / "run")
