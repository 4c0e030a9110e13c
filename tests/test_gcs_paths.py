"""Every run path on gs://, against a local Cloud Storage emulator (tests/gcs_emulator.py).

The trainer is a real `python -m itr_jax.train` subprocess with
`--workdir=gs://...`, killed (SIGKILL) mid-run and resumed: its parameters
must equal, bit for bit, those of the same run on local disk (`local_run`).
Then the run is evaluated from gs://. Data on gs:// (.npy folders, staged
to a local cache; TFDS records, read directly) trains to the parameters of
the same data on local disk.
"""
import json
import os
import signal
import socket

import jax
import numpy as np
import pytest

from itr_jax import evaluate as evaluate_cli
from itr_jax import filesystem as fs
from itr_jax.training import reporting
from itr_jax.training import workdir as workdir_lib
from test_reliability import _comparable, _start_training, _wait_for_train_step
from tiny_config import STEPS_PER_EPOCH, params_at, tiny_config

# The runs here train 3 epochs of the tiny config (30 steps, checkpoints
# every 7): enough to kill one mid-run, between checkpoints, and resume it.
EPOCHS = 3
STEPS = EPOCHS * STEPS_PER_EPOCH


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
  """The reference: the tiny config, EPOCHS epochs on local disk: (data_dir, workdir)."""
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("local_run")
  config = tiny_config(str(root / "data"), num_epochs=EPOCHS)
  trainer.train_and_evaluate(config, str(root / "run"))
  return str(root / "data"), str(root / "run")


@pytest.fixture(scope="module")
def gcs_run(gcs, local_run):
  """The local run's config trained on gs:// (killed once, resumed): its workdir."""
  data_dir, _ = local_run
  workdir = f"gs://{gcs.bucket}/runs/tiny"
  proc = _start_training(data_dir, workdir, num_epochs=EPOCHS)
  killed_at = _wait_for_train_step(workdir, 8, proc, timeout=400)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 8 <= killed_at < STEPS and proc.returncode == -signal.SIGKILL
  # The dead trainer's lock is left behind; the restart takes it over.
  assert fs.exists(fs.join(workdir, workdir_lib.LOCK_FILE))
  proc = _start_training(data_dir, workdir, num_epochs=EPOCHS)
  output, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, output
  resumed = output.split("Resumed from step ")[1].split()[0]
  assert 7 <= int(resumed) <= killed_at, output  # not started over
  return workdir


def test_killed_and_resumed_on_gcs_equals_the_local_run(gcs_run, local_run):
  workdir, (_, reference_dir) = gcs_run, local_run
  jax.tree.map(np.testing.assert_array_equal,
               params_at(reference_dir, STEPS), params_at(workdir, STEPS))
  assert _comparable(reporting.read_metrics(workdir)) == _comparable(
      reporting.read_metrics(reference_dir))
  names = fs.listdir(workdir)
  for name in ("config.json", "metrics.jsonl", "vocab.json", "tensorboard", "checkpoints"):
    assert name in names, names
  assert workdir_lib.LOCK_FILE not in names  # released at the end
  assert any("tfevents" in n for n in fs.listdir(fs.join(workdir, "tensorboard")))


def test_evaluate_from_gcs_matches_local(gcs_run, local_run):
  workdir, (_, reference_dir) = gcs_run, local_run
  remote = evaluate_cli.evaluate_run(workdir, "dev")
  local = evaluate_cli.evaluate_run(reference_dir, "dev")
  assert remote["full"] == local["full"]
  with fs.open(fs.join(workdir, "eval_dev.json")) as f:
    assert json.load(f)["full"] == remote["full"]


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path):
  """A fresh directory on local disk and one on the emulator: the layer must
  behave the same on both."""
  if request.param == "local":
    return str(tmp_path)
  gcs = request.getfixturevalue("gcs")
  return f"gs://{gcs.bucket}/fs/{request.node.originalname}"


def test_filesystem_layer_behaves_the_same_locally_and_on_gcs(root):
  from itr_jax.training import integrity  # pylint: disable=import-outside-toplevel
  run = fs.join(root, "run")
  fs.makedirs(fs.join(run, "a", "b"))
  fs.atomic_write_text(fs.join(run, "a", "b", "x.json"), "[1]")
  with fs.open(fs.join(run, "a", "log"), "a") as f:
    f.write("one\n")
  with fs.open(fs.join(run, "a", "log"), "a") as f:
    f.write("two\n")
  with fs.open(fs.join(run, "a", "log")) as f:
    assert f.read() == "one\ntwo\n"
  assert sorted(fs.listdir(run)) == ["a"] and fs.isdir(fs.join(run, "a"))
  assert sorted(fs.walk_files(run)) == ["a/b/x.json", "a/log"]
  assert fs.glob(fs.join(run, "a", "*", "*.json")) == [fs.join(run, "a", "b", "x.json")]
  assert fs.create_exclusive(fs.join(run, "LOCK"), "me")
  assert not fs.create_exclusive(fs.join(run, "LOCK"), "you")
  with fs.open(fs.join(run, "LOCK")) as f:
    assert f.read() == "me"
  fs.replace(fs.join(run, "a", "log"), fs.join(run, "log"))
  assert not fs.exists(fs.join(run, "a", "log")) and fs.getsize(fs.join(run, "log")) == 8
  with pytest.raises(FileNotFoundError):
    fs.open(fs.join(run, "missing"))
  with pytest.raises(FileNotFoundError):
    fs.remove(fs.join(run, "missing"))
  # Bounded reads stop one byte past the limit, on either store.
  assert fs.read_bounded(fs.join(run, "log"), 8) == b"one\ntwo\n"
  with pytest.raises(fs.TooLarge, match=r"image '.*log' holds more than 7 bytes"):
    fs.read_bounded(fs.join(run, "log"), 7, what="image")
  with pytest.raises(fs.errors(run)):
    fs.read_bounded(fs.join(run, "missing"), 8)
  import io  # pylint: disable=import-outside-toplevel
  buffer = io.BytesIO()
  np.savez(buffer, image_ids=np.arange(3))
  fs.atomic_write_bytes(fs.join(run, "ids.npz"), buffer.getvalue())
  np.testing.assert_array_equal(fs.read_npz(fs.join(run, "ids.npz"), 1 << 20)["image_ids"],
                                np.arange(3))
  # Integrity records catch one changed byte, on either store.
  integrity.write_record(fs.join(run, "a"))
  assert integrity.verify(fs.join(run, "a")) is None
  fs.atomic_write_text(fs.join(run, "a", "b", "x.json"), "[2]")
  assert integrity.verify(fs.join(run, "a")) == "file 'b/x.json' does not match its checksum"
  moved = integrity.move_aside(fs.join(run, "a"), fs.join(root, "aside"))
  assert not fs.exists(fs.join(run, "a")) and fs.exists(fs.join(moved, "b", "x.json"))
  # A vocabulary (config.data.vocab_path) round-trips.
  from itr_jax.data import vocab as vocab_lib  # pylint: disable=import-outside-toplevel
  words = vocab_lib.Vocabulary.build(["a dog runs", "a cat"])
  words.save(fs.join(run, "vocab.json"))
  assert vocab_lib.Vocabulary.load(fs.join(run, "vocab.json")).word2idx == words.word2idx
  fs.rmtree(root)
  assert not fs.exists(fs.join(root, "aside", fs.basename(moved), "b", "x.json"))


def test_a_live_trainer_holds_the_gcs_workdir(gcs):
  workdir = f"gs://{gcs.bucket}/runs/locked"
  with workdir_lib.WorkdirLock(workdir):
    assert workdir_lib.lock_holder(workdir)["pid"] == os.getpid()
    with pytest.raises(workdir_lib.WorkdirLockedError, match="in use by another"):
      workdir_lib.WorkdirLock(workdir).acquire()
  assert workdir_lib.lock_holder(workdir) is None
  with workdir_lib.WorkdirLock(workdir):  # released: can be taken again
    pass
  # A stopped trainer's lock is taken over: deleted only at the generation judged stale.
  fs.atomic_write_text(fs.join(workdir, "LOCK"), json.dumps(
      {"host": socket.gethostname(), "pid": 2**22 + 12345}))
  with workdir_lib.WorkdirLock(workdir) as lock:
    assert lock._still_mine()  # pylint: disable=protected-access


def test_gcs_data_mistakes_are_refused_before_any_write(gcs, tmp_path):
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  config = tiny_config(f"gs://{gcs.bucket}/nothing_here")
  with pytest.raises(FileNotFoundError, match="generate it on a local disk"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  config.data.local_cache_dir = f"gs://{gcs.bucket}/cache"
  with pytest.raises(ValueError, match="local_cache_dir must be a local folder"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def _upload_dir(local_dir, url):
  for name in fs.walk_files(local_dir):
    fs.copy(os.path.join(local_dir, name), fs.join(url, name))


@pytest.fixture(scope="module")
def gcs_data(gcs, local_run, tmp_path_factory):
  """The local run's dataset, as a .npy folder on gs:// and as TFDS records
  converted straight to gs:// (`tfds_builder --out=gs://...`):
  (local_dir, npy_url, tfds_url, cache_dir)."""
  from itr_jax.data import tfds_builder  # pylint: disable=import-outside-toplevel
  local, root = local_run[0], tmp_path_factory.mktemp("gcs_data")
  npy_url, tfds_url = f"gs://{gcs.bucket}/data/tiny", f"gs://{gcs.bucket}/tfds"
  _upload_dir(local, npy_url)
  cache = str(root / "cache")
  # From gs:// (staged) to gs:// (written locally, uploaded).
  assert tfds_builder.convert(npy_url, tfds_url, local_cache_dir=cache).startswith(tfds_url)
  with pytest.raises(ValueError, match="already exists"):
    tfds_builder.convert(local, tfds_url)  # nothing is overwritten
  return local, npy_url, tfds_url, cache


def _data_config(kind, gcs_data):
  local, npy_url, tfds_url, cache = gcs_data
  config = tiny_config({"local": local, "npy": npy_url}.get(kind, local),
                       num_epochs=EPOCHS)
  config.data.local_cache_dir = cache
  if kind == "tfds":
    config.data.name, config.data.tfds_data_dir = "tfds", tfds_url
  return config


def test_batches_from_gcs_data_equal_local_ones_after_resume(gcs_data):
  from itr_jax.data import check_record, pipeline, staging  # pylint: disable=import-outside-toplevel
  from itr_jax.training import experiment_data  # pylint: disable=import-outside-toplevel

  def batches(kind):
    data = experiment_data.prepare(_data_config(kind, gcs_data), "/nonexistent")
    it = pipeline.train_batches(data.train, data.vocab, batch_size=24, seed=3,
                                max_len=16, start_step=13, num_steps=2)
    out = list(it)
    it.close()
    return data, out

  _, expected = batches("local")
  for kind in ("npy", "tfds"):
    data, got = batches(kind)
    assert len(got) == 2
    for want, have in zip(expected, got):
      assert want.keys() == have.keys()
      for key in want:
        np.testing.assert_array_equal(want[key], have[key], err_msg=f"{kind} {key}")
  # The staged copy: verified record, one-time value check recorded next to
  # it, and re-used (not downloaded again) by the next start.
  _, npy_url, _, cache = gcs_data
  ims = staging.local_path(fs.join(npy_url, "train_ims.npy"), cache)
  assert os.path.isfile(ims + staging.RECORD_SUFFIX)
  assert os.path.isfile(check_record.record_path(ims))
  before = os.stat(ims).st_mtime_ns
  experiment_data.prepare(_data_config("npy", gcs_data), "/nonexistent")
  assert os.stat(ims).st_mtime_ns == before
  # A changed object is copied again; a damaged copy too.
  with open(ims, "r+b") as f:
    f.seek(-4, 2)
    f.write(b"\0\0\0\1")
  assert staging.crc32c(ims) != json.load(open(ims + staging.RECORD_SUFFIX))[
      "source_state"]["crc32c"]
  os.utime(ims, ns=(before + 10**9, before + 10**9))
  staging.stage(fs.join(npy_url, "train_ims.npy"), cache)
  assert staging.crc32c(ims) == json.load(open(ims + staging.RECORD_SUFFIX))[
      "source_state"]["crc32c"]


def test_training_from_gcs_data_equals_local_and_evaluates(gcs_data, local_run, tmp_path):
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  runs = {"local": local_run[1]}
  for kind in ("npy", "tfds"):
    runs[kind] = str(tmp_path / kind)
    trainer.train_and_evaluate(_data_config(kind, gcs_data), runs[kind])
    jax.tree.map(np.testing.assert_array_equal, params_at(runs["local"], STEPS),
                 params_at(runs[kind], STEPS))
  with fs.open(fs.join(runs["npy"], "config.json")) as f:
    assert json.load(f)["data"]["data_dir"] == gcs_data[1]  # the URL, not the cache
  local = evaluate_cli.evaluate_run(runs["local"], "dev", write=False)
  for kind in ("npy", "tfds"):
    assert evaluate_cli.evaluate_run(runs[kind], "dev", write=False)["full"] == local["full"]


def test_sweep_and_report_on_gcs(gcs, gcs_run, tmp_path):
  """A sweep whose sweep_dir is on gs://: each step's output is appended to
  the member's sweep.log there and DONE marks it finished (the runner with a
  fake `python`, as in tests/test_sweep.py); the report of runs on gs:// is
  written there. Through the real CLIs: test_sweep_and_report_on_gcs_through_the_clis."""
  from itr_jax import sweeps  # pylint: disable=import-outside-toplevel
  from itr_jax.report import build as report_build  # pylint: disable=import-outside-toplevel
  python = tmp_path / "python"
  python.write_text('#!/bin/sh\necho "ran $*"\n')
  python.chmod(0o755)
  sweep_dir = f"gs://{gcs.bucket}/sweeps/fake"
  [member] = sweeps.expand(sweep_dir, [{"loss.weight": 1.0}])
  [outcome] = sweeps.run_members([member], "cfg.py", python=str(python))
  assert outcome.status == "done", outcome.message
  assert member.done and fs.exists(fs.join(member.workdir, sweeps.DONE_FILE))
  with fs.open(fs.join(member.workdir, "sweep.log")) as f:
    log = f.read()
  assert "ran -m itr_jax.train" in log and "ran -m itr_jax.evaluate" in log, log
  # The report of the runs in gs://.../runs (the trained, evaluated gcs_run).
  evaluate_cli.evaluate_run(gcs_run)
  assert fs.exists(fs.join(gcs_run, "eval_test.json"))
  runs_dir = fs.dirname(gcs_run)
  report_build.write_report(runs_dir)
  with fs.open(fs.join(runs_dir, "report", "report.md")) as f:
    assert "## Test split" in f.read()
  assert fs.glob(fs.join(runs_dir, "report", "plots", "*.png"))


@pytest.mark.slow
def test_sweep_and_report_on_gcs_through_the_clis(gcs, tmp_path):
  """A one-member sweep (1 epoch) with --sweep_dir on gs:// and --report.

  Fast test of the same: test_sweep_and_report_on_gcs (the runner and the
  report on gs://), with the gs:// training and evaluation tests above.
  """
  from itr_jax.training import experiment_data  # pylint: disable=import-outside-toplevel
  from test_sweep_end_to_end import REPO, _sweep  # pylint: disable=import-outside-toplevel
  data_dir = experiment_data.data_dir(tiny_config(str(tmp_path / "data")))
  config = tmp_path / "one_member.py"
  config.write_text(
      "from itr_jax.sweeps import declaration\n"
      "def get_config(arg=None):\n"
      f"  return declaration.load_config_file({os.path.join(REPO, 'configs', 'synthetic_scenes.py')!r})\n"
      "def get_hyper(h):\n"
      "  return h.sweep('loss.weight', [1.0])\n")
  sweep_dir = f"gs://{gcs.bucket}/sweeps/one"
  result = _sweep(str(config), sweep_dir, data_dir, "--report")
  assert result.returncode == 0, result.stdout + result.stderr
  assert "1 ok, 0 failed" in result.stdout
  member = fs.join(sweep_dir, "loss.weight=1.0")
  for name in ("DONE", "config.json", "eval_test.json", "sweep.log"):
    assert fs.exists(fs.join(member, name)), fs.listdir(member)
  with fs.open(fs.join(member, "sweep.log")) as f:
    assert "itr_jax.evaluate" in f.read()  # both steps' output appended
  with fs.open(fs.join(sweep_dir, "report", "report.md")) as f:
    assert "## Test split" in f.read()
  assert fs.glob(fs.join(sweep_dir, "report", "plots", "*.png"))


def test_embed_captions_reads_and_writes_gcs(gcs, tmp_path):
  from itr_jax.tools import embed_captions as ec  # pylint: disable=import-outside-toplevel
  from test_embed_captions import CountingEncoder, _write  # pylint: disable=import-outside-toplevel
  local_caps = _write(tmp_path)
  caps = f"gs://{gcs.bucket}/embed/train_caps.txt"
  fs.copy(local_caps, caps)
  cache = str(tmp_path / "cache")
  out = ec.embed_captions_file(caps, encoder=CountingEncoder(), chunk_size=4,
                               progress=False, local_cache_dir=cache)
  assert out == f"gs://{gcs.bucket}/embed/train_caps_emb.npy"
  expected = ec.embed_captions_file(local_caps, encoder=CountingEncoder(),
                                    chunk_size=4, progress=False)
  with fs.open(out, "rb") as f:
    np.testing.assert_array_equal(np.load(f), np.load(expected))
  with fs.open(ec.sidecar_path(out)) as f:
    remote = json.load(f)
  local = ec.read_sidecar(expected)
  assert remote.pop("created_utc") and local.pop("created_utc")
  assert remote == local  # incl. the embeddings' sha256
  enc = CountingEncoder()  # up to date on gs://: nothing recomputed
  ec.embed_captions_file(caps, encoder=enc, progress=False, local_cache_dir=cache)
  assert enc.calls == []
  other = CountingEncoder()
  other.name = "another-encoder"
  with pytest.raises(FileExistsError, match="--overwrite"):
    ec.embed_captions_file(caps, encoder=other, progress=False, local_cache_dir=cache)
  with fs.open(ec.sidecar_path(out)) as f:
    assert json.load(f)["encoder"]["name"] == "counting"


def test_image_files_and_records_on_gcs(gcs, tmp_path):
  """Raw images on gs://: files read under a gs:// image root, converted to
  ArrayRecord shards on gs://, trained from (staged): batches equal local."""
  from itr_jax.data import image_records, synthetic_pixels  # pylint: disable=import-outside-toplevel
  from itr_jax.training import defaults, experiment_data  # pylint: disable=import-outside-toplevel
  local = synthetic_pixels.generate(str(tmp_path / "px"), image_size=24, num_train=6,
                                    num_dev=2, num_test=0, caption_encoder="tfidf",
                                    emb_dim=4)
  root = f"gs://{gcs.bucket}/pixels"
  _upload_dir(local, root)
  records = f"gs://{gcs.bucket}/pixel_records"
  image_records.convert(local, records, image_root=root)  # files on gs:// -> gs://

  def batch(name, data_dir, image_root=""):
    config = defaults.base_config()
    config.data.update(name=name, data_dir=data_dir, image_root=image_root,
                       test_split="", max_len=12,
                       local_cache_dir=str(tmp_path / "cache"))
    config.data.image.update(size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    config.train.batch_size = 10
    data = experiment_data.prepare(config, "/nonexistent")
    it = data.train_batches(start_step=2)
    out = next(it)
    it.close()
    return out

  want = batch("images", local, local)
  for got in (batch("images", local, root), batch("images", records)):
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
