"""Reads `torch.save` files into NumPy without PyTorch, unpickling only an allow-list.

A `torch.save` file of PyTorch >= 1.6 is a zip archive `<name>/data.pkl`,
`<name>/data/<key>`, `<name>/byteorder`, ...: `data.pkl` pickles the saved
object with every tensor as `torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)` and every storage as a persistent id
`("storage", torch.FloatStorage, key, location, numel)` whose bytes are the
raw file `data/<key>`. `load` runs that pickle with a restricted
`pickle.Unpickler` whose `find_class` returns NumPy stand-ins for those torch
names and refuses every global outside `ALLOWED` (a pickle can otherwise
call any importable function), so reading an untrusted checkpoint runs no
code of its own. A tensor element (i, j, ...) is
`storage[offset + i * stride[0] + j * stride[1] + ...]`, read with
`np.lib.stride_tricks.as_strided` and copied.

Older (non-zip) files, the format of `torch.save(...,
_use_new_zipfile_serialization=False)` and of PyTorch < 1.6, need PyTorch
itself: `load` then calls `torch.load(weights_only=True)` (the optional
`[torch]` extra) and says so when PyTorch is missing.

>>> import io, pickle, zipfile
>>> buf = io.BytesIO()
>>> with zipfile.ZipFile(buf, "w") as z:
...   z.writestr("ckpt/data.pkl", pickle.dumps({"epoch": 3}, protocol=2))
>>> load(buf)
{'epoch': 3}
"""
from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import zipfile
from typing import Any, BinaryIO, Union

import ml_dtypes
import numpy as np


# torch storage class name -> NumPy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _Storage:
  """A storage class named in the pickle; only its dtype is used."""

  def __init__(self, name: str):
    self.dtype = np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """`torch._utils._rebuild_tensor_v2` on a 1-D NumPy storage: an ndarray copy."""
  del unused  # requires_grad, backward hooks, metadata: not kept in NumPy
  if not size:
    return storage[offset].copy()
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size),
      strides=tuple(s * storage.itemsize for s in stride), writeable=False)
  return np.array(view)


def _rebuild_parameter(data, *unused):
  del unused
  return data


def _numpy_scalar(dtype, data=b""):
  """NumPy's pickled-scalar constructor (`numpy._core.multiarray.scalar`),
  for plain dtypes only: an object-dtype scalar would unpickle arbitrary
  objects, and NumPy's own function is private."""
  dtype = np.dtype(dtype)
  if dtype.hasobject:
    raise UnsupportedPickleError("the checkpoint contains a NumPy object scalar, "
                                 "which this reader does not load")
  if not isinstance(data, bytes) or len(data) != dtype.itemsize:
    raise pickle.UnpicklingError(f"a pickled NumPy {dtype} scalar has "
                                 f"{len(data) if isinstance(data, bytes) else type(data).__name__} "
                                 f"bytes, not {dtype.itemsize}")
  return np.frombuffer(data, dtype=dtype)[0]


# (module, name) -> what the restricted unpickler returns for that global.
ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # NumPy scalars (e.g. a best_rsum computed with NumPy) and their dtypes;
    # protocol 2 spells their bytes as _codecs.encode(str, "latin1").
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): lambda text, encoding="utf-8": text.encode(encoding),
    **{("torch", name): _Storage(name) for name in STORAGE_DTYPES},
}
# NumPy >= 1.25 pickles dtypes as numpy.dtypes.Float64DType etc.
ALLOWED.update({("numpy.dtypes", type(np.dtype(t)).__name__): type(np.dtype(t))
                for t in (np.float32, np.float64, np.int64, np.int32, np.bool_)})


class UnsupportedPickleError(pickle.UnpicklingError):
  """The checkpoint names a global outside the allow-list."""


class _Unpickler(pickle.Unpickler):
  """`data.pkl` of a torch zip checkpoint, storages read from the archive."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(file)
    self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module: str, name: str):
    try:
      return ALLOWED[(module, name)]
    except KeyError:
      raise UnsupportedPickleError(
          f"the checkpoint contains '{module}.{name}', which this reader does not "
          "load (only tensors, dicts, lists, argparse.Namespace and numbers are "
          "allowed, so that reading runs no code from the file). Re-save the "
          "checkpoint with only those, or load it with PyTorch if you trust it."
      ) from None

  def persistent_load(self, pid):
    kind, storage_type, key, _location, numel = pid
    if kind != "storage" or not isinstance(storage_type, _Storage):
      raise UnsupportedPickleError(f"unsupported persistent id {pid[:2]!r} in the checkpoint")
    if key not in self._storages:
      dtype = storage_type.dtype.newbyteorder("<" if self._byteorder == "little" else ">")
      raw = self._archive.read(f"{self._prefix}data/{key}")
      array = np.frombuffer(raw, dtype=dtype, count=numel)
      self._storages[key] = array.astype(array.dtype.newbyteorder("="))
    return self._storages[key]


def is_zip_checkpoint(path_or_file: Union[str, BinaryIO]) -> bool:
  return zipfile.is_zipfile(path_or_file)


def load(path_or_file: Union[str, os.PathLike, BinaryIO]) -> Any:
  """The object `torch.save` wrote, tensors as NumPy arrays (no PyTorch needed
  for zip files; older files are read with PyTorch, see the module doc)."""
  if not zipfile.is_zipfile(path_or_file):
    return _load_with_torch(path_or_file)
  with zipfile.ZipFile(path_or_file) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
      raise ValueError(f"not a torch.save file: expected one <name>/data.pkl in the "
                       f"zip archive, found {pickles or 'none'}")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = "little"
    if f"{prefix}byteorder" in archive.namelist():
      byteorder = archive.read(f"{prefix}byteorder").decode().strip()
    with archive.open(pickles[0]) as f:
      return _Unpickler(io.BytesIO(f.read()), archive, prefix, byteorder).load()


def _to_numpy(obj):
  import torch  # pylint: disable=import-outside-toplevel
  if isinstance(obj, torch.Tensor):
    return obj.detach().cpu().numpy()
  if isinstance(obj, dict):
    return type(obj)((k, _to_numpy(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_to_numpy(v) for v in obj)
  return obj


def _load_with_torch(path_or_file):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError(
        "this checkpoint is in PyTorch's legacy (non-zip) format, which needs "
        "PyTorch to read: pip install 'itr_jax[torch]' (or re-save it with "
        "torch >= 1.6, whose zip format itr_jax reads without PyTorch).") from None
  with torch.serialization.safe_globals([argparse.Namespace]):
    return _to_numpy(torch.load(path_or_file, map_location="cpu", weights_only=True))
