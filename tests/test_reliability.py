"""Preemption, exact resume after SIGKILL, damaged checkpoints, logs after
interruptions, one trainer per workdir, bad input, divergence.

The kill tests run `python -m itr_jax.train` as a real subprocess and kill it
from outside at whatever moment it has reached, so they exercise the same
path a preempted or crashed job takes. One real process per behaviour (SIGKILL,
SIGTERM, a second Ctrl-C); the resumes, Ctrl-C's checkpoint (a real SIGINT sent
to this process) and a second trainer's refusal run in this process.
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
from itr_jax.training import errors
from itr_jax.training import reporting
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib
from tiny_config import TOTAL_STEPS, cli_flags, params_at, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start_training(data_dir, workdir, num_epochs=None):
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  epochs = {} if num_epochs is None else {"num_epochs": num_epochs}
  return subprocess.Popen(
      [sys.executable, "-m", "itr_jax.train", f"--workdir={workdir}",
       *cli_flags(data_dir, **epochs)], cwd=REPO, env=env,
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


def _stopped_step(output):
  """The step of the "Preempted: saved a checkpoint at step N;" line."""
  assert "Preempted: saved a checkpoint at step" in output, output[-3000:]
  return int(output.split("saved a checkpoint at step ")[1].split(";")[0])


def _assert_logs_are_the_references_up_to(workdir, reference_dir, step):
  """metrics.jsonl so far: the uninterrupted run's records up to `step`
  (same windows; nothing twice; no record at an unscheduled stop step)."""
  assert _comparable(reporting.read_metrics(workdir)) == [
      r for r in _comparable(reporting.read_metrics(reference_dir))
      if r["step"] <= step], f"at step {step}"


def _sigint_at_train_step(monkeypatch, step):
  """Sends SIGINT to this process once a train record at >= `step` is
  logged: inside the train loop, so the trainer's own handler receives it."""
  write, sent = reporting.MetricsLog.write, []

  def write_then_interrupt(self, at, kind, *args, **kwargs):
    write(self, at, kind, *args, **kwargs)
    if kind == "train" and at >= step and not sent:
      sent.append(at)
      os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(reporting.MetricsLog, "write", write_then_interrupt)
  return sent


def test_sigkill_sigterm_and_sigint_then_resume_give_the_uninterrupted_run(
    tiny_run, tmp_path, monkeypatch, capsys):
  """One run, interrupted four ways and resumed after each, ends bitwise at
  the uninterrupted run's parameters, with its logs (metrics.jsonl equal,
  TensorBoard one point per step):

  1. SIGKILL mid-epoch, between checkpoints (a real trainer process);
  2. resumed (a real process); while it holds the workdir (stopped with
     SIGSTOP) another trainer is refused, naming it; then SIGTERM: it saves
     the current step, exits 0 and releases the lock;
  3. resumed (a real process); SIGKILL again, after a resume;
  4. resumed in this process; SIGINT (Ctrl-C) reaches the trainer's handler:
     it saves the current step and returns;
  5. resumed in this process to the end.

  A second Ctrl-C is test_second_ctrl_c_exits_at_once.
  """
  _, reference_dir, _, data_dir = tiny_run
  workdir = str(tmp_path / "interrupted")

  # 1. SIGKILL at step >= 15 (checkpoints every 7 steps and at epoch ends).
  proc = _start_training(data_dir, workdir)
  assert _wait_for_train_step(workdir, 15, proc) >= 15
  proc.send_signal(signal.SIGKILL)
  proc.wait()

  # 2. Resumed; a second trainer while it holds the lock; SIGTERM.
  proc = _start_training(data_dir, workdir)
  _wait_for_train_step(workdir, 23, proc)
  proc.send_signal(signal.SIGSTOP)  # holds the lock while the second one starts
  try:
    with pytest.raises(workdir_lib.WorkdirLockedError) as refused:
      trainer.train_and_evaluate(tiny_config(data_dir), workdir)
  finally:
    proc.send_signal(signal.SIGCONT)
  # The CLI prints a USER_ERRORS message as one "Error: ..." line, exit 1
  # (tests/test_cli_errors.py).
  assert isinstance(refused.value, errors.USER_ERRORS)
  assert (f"in use by another trainer (host {os.uname().nodename}, pid {proc.pid}"
          in errors.message(refused.value)), errors.message(refused.value)
  _wait_for_train_step(workdir, 43, proc)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, output
  stopped = _stopped_step(output)
  ckpt = checkpointing.Checkpoints(workdir, keep=2)
  assert ckpt.latest_step() == stopped and 43 <= stopped < TOTAL_STEPS
  ckpt.close()
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
  _assert_logs_are_the_references_up_to(workdir, reference_dir, stopped)

  # 3. Resumed; SIGKILL at step >= 62.
  proc = _start_training(data_dir, workdir)
  assert _wait_for_train_step(workdir, 62, proc) >= 62
  proc.send_signal(signal.SIGKILL)
  proc.wait()

  # 4. Resumed here; Ctrl-C at step >= 80.
  assert threading.current_thread() is threading.main_thread()  # where signals go
  handler = signal.getsignal(signal.SIGINT)
  capsys.readouterr()
  sent = _sigint_at_train_step(monkeypatch, 80)
  trainer.train_and_evaluate(tiny_config(data_dir), workdir)
  monkeypatch.undo()
  output = "".join(capsys.readouterr())
  assert sent and "Interrupted: saving a checkpoint after this step" in output, output
  stopped = _stopped_step(output)
  ckpt = checkpointing.Checkpoints(workdir, keep=2)
  assert ckpt.latest_step() == stopped and sent[0] < stopped < TOTAL_STEPS
  ckpt.close()
  assert signal.getsignal(signal.SIGINT) is handler  # restored
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
  _assert_logs_are_the_references_up_to(workdir, reference_dir, stopped)

  # 5. Resumed here to the end.
  trainer.train_and_evaluate(tiny_config(data_dir), workdir)
  jax.tree.map(np.testing.assert_array_equal,
               params_at(reference_dir, TOTAL_STEPS), params_at(workdir, TOTAL_STEPS))
  _assert_logs_are_the_references_up_to(workdir, reference_dir, TOTAL_STEPS)
  for tag, steps in _tensorboard_steps(workdir).items():
    assert steps == sorted(set(steps)), tag


def _tiny_state(value):
  return train_state.TrainState.create(
      apply_fn=None, params={"w": jnp.full((3,), value)}, tx=optax.adam(1e-3))


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

def _dataset(tmp_path):
  d = str(tmp_path / "data")
  for seed, split in enumerate(("train", "dev", "test")):
    data_testing.write_random_split(d, split, num_images=8, regions=3, feature_dim=4,
                                    seed=seed)
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


def _break_zero_embedding_row(d):
  emb = np.load(f"{d}/train_caps_emb.npy")
  emb[4] = 0.0  # cosine undefined: RSC would grade its pairs 0.5
  np.save(f"{d}/train_caps_emb.npy", emb)


def _break_constant_embedding_row(d):
  emb = np.load(f"{d}/dev_caps_emb.npy")
  emb[2] = 0.25
  np.save(f"{d}/dev_caps_emb.npy", emb)


def _break_identical_embeddings(d):
  np.save(f"{d}/train_caps_emb.npy",
          np.tile(np.arange(1, 7, dtype=np.float32), (40, 1)))


def _break_embeddings_changed_after_sidecar(d):
  from itr_jax.tools import embed_captions  # pylint: disable=import-outside-toplevel

  class Encoder:
    name, weights_sha256, tokenizer_settings, dim = "fake", "0", {}, 6

    def encode(self, texts, batch_size):
      del batch_size
      return np.random.default_rng(len(texts)).standard_normal(
          (len(texts), 6)).astype(np.float32)

  os.remove(f"{d}/train_caps_emb.npy")
  embed_captions.embed_captions_file(f"{d}/train_caps.txt", encoder=Encoder(),
                                     progress=False)
  emb = np.load(f"{d}/train_caps_emb.npy")
  emb[0, 0] += 1.0  # same shape and captions: only the array's hash tells
  np.save(f"{d}/train_caps_emb.npy", emb)


def _break_caption_with_line_separator(d):
  # U+2028 and a form feed inside a caption do not end its line (wc -l: 40).
  with open(f"{d}/train_caps.txt", encoding="utf-8") as f:
    lines = f.read().split("\n")
  lines[3] = "a dog\u2028on a mat\x0cnear a car"
  lines[5] = ""  # ... so the empty caption is line 6, as an editor shows it
  with open(f"{d}/train_caps.txt", "w", encoding="utf-8") as f:
    f.write("\n".join(lines))


def _break_missing_test_split(d):
  for suffix in ("_ims.npy", "_caps.txt", "_caps_emb.npy"):
    os.remove(f"{d}/test{suffix}")


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
    (_break_zero_embedding_row, r"train_caps_emb\.npy' row 4 is constant"),
    (_break_constant_embedding_row, r"dev_caps_emb\.npy' row 2 is constant"),
    (_break_identical_embeddings, r"40 identical rows"),
    (_break_embeddings_changed_after_sidecar, r"changed after its sidecar"),
    (_break_caption_with_line_separator, r"line 6 is an empty caption"),
    (_break_missing_test_split, r"missing image features file 'test_ims\.npy'"),
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
    ("loss.weight", 2.0, r"--config\.loss\.weight=0\.5"),  # the hint names the field
    ("optim.learning_rate", float("nan"), r"optim\.learning_rate must be a finite number > 0, got nan"),
    ("optim.learning_rate", 0.0, r"optim\.learning_rate .*> 0"),
    ("optim.learning_rate", -1e-3, r"optim\.learning_rate"),
    ("optim.grad_clip", float("nan"), r"optim\.grad_clip"),
    ("optim.lr_decay", 0.0, r"optim\.lr_decay"),
    ("data.max_len", 2, r"data\.max_len must be an int >= 3"),
    # Sizes that only ran out of memory (12.7 GB) after config.json was written.
    ("data.max_len", 1000000, r"data\.max_len must be at most 1024 \(longer than any caption"),
    ("model.embed_size", 10**6, r"model\.embed_size must be at most 16384"),
    ("train.log_every_steps", 0, r"train\.log_every_steps must be an int >= 1.*=100"),
    ("train.checkpoint_every_steps", 0, r"train\.checkpoint_every_steps"),
    ("train.num_epochs", 0, r"train\.num_epochs must be an int >= 1"),
    ("train.keep_checkpoints", 0, r"train\.keep_checkpoints"),
    ("eval.every_epochs", 0, r"eval\.every_epochs"),
    ("eval.batch_size", 0, r"eval\.batch_size"),
    ("eval.ndcg_k", -1, r"eval\.ndcg_k"),
    ("model.pooling", "mean", r"model\.pooling must be one of"),
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


def test_captions_split_on_newlines_only_and_lose_a_byte_order_mark(tmp_path):
  from itr_jax.data import precomputed  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "x_caps.txt")
  with open(path, "wb") as f:
    f.write("\ufeffa dog\r\na cat\u2028on a mat\nform\x0cfeed\n".encode("utf-8"))
  assert precomputed.read_captions(path) == [
      "a dog", "a cat\u2028on a mat", "form\x0cfeed"]  # as many as `wc -l`


# --- damaged checkpoints, interruptions and logs, on the tiny run --------------

_TIMING = ("time", "steps_per_second", "eval_seconds", "compile_seconds")


def _comparable(records):
  return [{k: v for k, v in r.items() if k not in _TIMING} for r in records]


def _tensorboard_steps(workdir):
  """{tag: [steps in file order]} over every event file of the run."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  steps = {}
  tb = os.path.join(workdir, "tensorboard")
  for name in sorted(os.listdir(tb)):
    for raw in tf.data.TFRecordDataset(os.path.join(tb, name)).as_numpy_iterator():
      event = tf.compat.v1.Event.FromString(raw)
      for value in event.summary.value:
        steps.setdefault(value.tag, []).append(event.step)
  return steps


def test_damaged_and_stray_checkpoints_cost_only_themselves(tiny_run, tmp_path, caplog):
  """A stray empty step directory and a flipped byte in the newest checkpoint:
  training resumes from the newest intact one, keeps its logs, and ends with
  the uninterrupted run's parameters (not a restart from step 0)."""
  config, reference_dir, _, data_dir = tiny_run
  workdir = str(tmp_path / "damaged")
  shutil.copytree(reference_dir, workdir)
  directory = os.path.join(workdir, "checkpoints")
  os.makedirs(os.path.join(directory, str(10 * TOTAL_STEPS)))  # empty, "newest"
  newest = os.path.join(directory, str(TOTAL_STEPS))
  array = next(os.path.join(root, n) for root, _, names in os.walk(newest)
               for n in names if os.sep + "d" + os.sep in os.path.join(root, n))
  data = bytearray(open(array, "rb").read())
  data[-1] ^= 0x80
  open(array, "wb").write(bytes(data))
  before = reporting.read_metrics(workdir)
  trainer.train_and_evaluate(tiny_config(data_dir), workdir)
  assert f"Checkpoint step {TOTAL_STEPS} in" in caplog.text
  moved = sorted(n.split("-")[0] for n in os.listdir(
      os.path.join(workdir, checkpointing.CORRUPTED_DIR)))
  assert moved == sorted([str(TOTAL_STEPS), str(10 * TOTAL_STEPS)])
  jax.tree.map(np.testing.assert_array_equal,
               params_at(reference_dir, TOTAL_STEPS), params_at(workdir, TOTAL_STEPS))
  after = reporting.read_metrics(workdir)
  assert after[0]["step"] == 0 and _comparable(after) == _comparable(before)


def test_second_ctrl_c_exits_at_once(tiny_run, tmp_path):
  _, _, _, data_dir = tiny_run
  workdir = str(tmp_path / "twice")
  proc = _start_training(data_dir, workdir)
  _wait_for_train_step(workdir, 5, proc)
  proc.send_signal(signal.SIGINT)
  # Pending signals of one kind merge: the second goes once the first is seen.
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if "Interrupted: saving a checkpoint" in line:
      break
  proc.send_signal(signal.SIGINT)
  output = "".join(seen) + proc.communicate(timeout=120)[0]
  assert proc.returncode == 128 + signal.SIGINT, output
  # Caught by the watcher, or (if it came during shutdown) by the CLI.
  assert "Second interrupt: exiting now" in output or "Interrupted." in output
  assert "Traceback" not in output and "Event loop is closed" not in output
