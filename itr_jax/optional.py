"""Optional dependencies, imported where they are first used.

TensorFlow, TensorFlow Datasets and clu serve only the tf.data input
pipeline, TFDS datasets and TensorBoard logs. The losses, models, training
step, sharding, checkpoints and evaluation on precomputed NumPy data run
without them (GPU and TPU images often ship without TensorFlow).

>>> require("json", "reading JSON", "json").dumps([1])
'[1]'
>>> require("no_such_module_xyz", "Reading TFDS datasets", "tensorflow-datasets")
Traceback (most recent call last):
...
ImportError: Reading TFDS datasets needs tensorflow-datasets, which is not installed: pip install tensorflow-datasets (or pip install 'itr_jax[train]').
"""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, purpose: str, package: str) -> ModuleType:
  """`import module`, or an ImportError saying what needs it and how to install it."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ImportError(
        f"{purpose} needs {package}, which is not installed: pip install "
        f"{package} (or pip install 'itr_jax[train]').") from e


def available(module: str) -> bool:
  """Whether `module` imports (it is then imported)."""
  try:
    importlib.import_module(module)
  except ImportError:
    return False
  return True
