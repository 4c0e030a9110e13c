"""Optional dependencies and deprecations.

Without TensorFlow, TFDS and clu installed (GPU/TPU images often lack them)
a run trains, checkpoints and evaluates on precomputed NumPy data, and no
deprecated API of jax/flax/optax/orbax/numpy is used on that path.

One subprocess (its interpreter must never have imported TensorFlow): the
three packages are made unimportable, then the tiny demo config trains for
one epoch on the 8 simulated devices (train step, sharded batches, orbax
checkpoints, dev evaluation) and the best checkpoint is evaluated on the test
split. Every DeprecationWarning or FutureWarning raised after the libraries
are imported is an error there, so a newly deprecated call fails this test.
"""
import json
import os
import subprocess
import sys
import warnings

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import sys, warnings
for name in ("tensorflow", "tensorflow_datasets", "clu", "tensorboard"):
  sys.modules[name] = None  # `import name` now raises ImportError
import jax, flax, optax, orbax.checkpoint, numpy
from tiny_config import tiny_config
from itr_jax import evaluate as evaluate_cli
from itr_jax.training import trainer
for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
  warnings.simplefilter("error", category)
data_dir, workdir = sys.argv[1:3]
best = trainer.train_and_evaluate(tiny_config(data_dir, num_epochs=1), workdir)
test = evaluate_cli.evaluate_run(workdir, "test")["full"]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in (
    "tensorflow", "tensorflow_datasets", "clu", "tensorboard") and sys.modules[m])
print("RESULT", json.dumps({"best": best, "test_rsum": test["rsum"],
                            "devices": jax.device_count(), "loaded": loaded}))
""".replace("import jax,", "import json, jax,")


def test_trains_checkpoints_and_evaluates_without_tensorflow(tmp_path):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [TESTS, os.environ.get("PYTHONPATH", "")])}
  proc = subprocess.run(
      [sys.executable, "-c", SCRIPT, str(tmp_path / "data"), str(tmp_path / "run")],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert result["loaded"] == [] and result["devices"] == 8
  assert result["best"]["best_step"] in (0, 10) and 0 < result["test_rsum"] <= 600
  assert "TensorBoard logs are not written" in proc.stderr
  run = tmp_path / "run"
  assert (run / "metrics.jsonl").exists() and not (run / "tensorboard").exists()
  assert {"7", "10"} <= set(os.listdir(run / "checkpoints"))


def test_deprecation_warnings_raised_in_itr_jax_fail_the_tests():
  """pyproject.toml's filterwarnings: a deprecated call made by itr_jax code
  (a warning attributed to an itr_jax module) is an error in every test."""
  with pytest.raises(DeprecationWarning):
    warnings.warn_explicit("old API", DeprecationWarning, "scorer.py", 1,
                           module="itr_jax.models.scorer")
  with pytest.raises(FutureWarning):
    warnings.warn_explicit("old API", FutureWarning, "scorer.py", 1,
                           module="itr_jax.models.scorer")


def test_optional_import_examples():
  import doctest  # pylint: disable=import-outside-toplevel
  from itr_jax import optional  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(optional, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
