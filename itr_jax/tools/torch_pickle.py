"""Reads `torch.save` files into NumPy without PyTorch: a strict parser, safe on any bytes.

A `torch.save` file of PyTorch >= 1.6 is a zip archive `<name>/data.pkl`,
`<name>/data/<key>`, `<name>/byteorder`, ...: `data.pkl` pickles the saved
object with every tensor as `torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, ...)` and every storage as a persistent id
`("storage", torch.FloatStorage, key, location, numel)` whose bytes are the
raw file `data/<key>`. A tensor element (i, j, ...) is
`storage[offset + i * stride[0] + j * stride[1] + ...]`.

`load` does not run the pickle. It decodes its opcodes
(`pickletools.genops`) and interprets only the subset checkpoints use, on
plain values it builds itself:

* containers: dict, `collections.OrderedDict`, list, tuple, `argparse.Namespace`;
  keys are str, int, float, bool, None or bytes;
* tensors (`_rebuild_tensor_v2`, `_rebuild_parameter`) of the storage
  types in `STORAGE_DTYPES`; each tensor's size, strides (>= 0) and offset
  must lie inside its storage, each storage's length must equal its archive
  member's declared size (checked before decompressing, and the member may
  not inflate past it);
* NumPy scalars and dtypes of numeric types only, from the exact
  description NumPy pickles (`numpy.dtype(code, False, True)` plus its
  standard state); never an object dtype;
* a state update (pickle BUILD) only once, and only on a Namespace or
  OrderedDict this file created (an OrderedDict's state, PyTorch's
  `_metadata`, is dropped).

Anything else is refused with `CheckpointError`, one sentence naming the
file and the reason. Reading is bounded: `data.pkl` at most
`MAX_PICKLE_BYTES`, members that inflate more than `MAX_INFLATION` times
their compressed size are refused (`torch.save` stores them uncompressed),
and the arrays returned total at most `MAX_VIEW_FACTOR` times the storage
bytes read (plus `MAX_VIEW_SLACK`), so tensors that repeat a storage through
zero strides cannot make a small file fill memory. Nothing read is shared
between calls.

Older (non-zip) files, the format of `torch.save(...,
_use_new_zipfile_serialization=False)` and of PyTorch < 1.6, need PyTorch
>= `MIN_TORCH_FOR_LEGACY` (2.6.0: its `weights_only` loader has no known
code-execution advisory; earlier ones have CVE-2025-32434) and are read
with `torch.load(weights_only=True)`, then checked like zip files; with an
older or no PyTorch they are refused.

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
import math
import os
import pickle
import pickletools
import re
import struct
import zipfile
import zlib
from typing import Any, BinaryIO, NamedTuple, Union

import ml_dtypes
import numpy as np

# torch storage class name -> NumPy dtype of its elements.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
# NumPy dtype codes a pickled NumPy scalar may have (numeric only).
SCALAR_CODES = frozenset(["b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8",
                          "f2", "f4", "f8", "c8", "c16"])
MAX_PICKLE_BYTES = 64 << 20  # a state dict's data.pkl is kilobytes to a few MB
MAX_OBJECTS = 4_000_000  # values the pickle may create (bounds memory per pickle byte)
MAX_DEPTH = 100  # container nesting
MAX_NDIM = 32
MAX_INFLATION = 4  # decompressed / compressed size of one archive member
MAX_VIEW_FACTOR, MAX_VIEW_SLACK = 4, 16 << 20
MIN_TORCH_FOR_LEGACY = "2.6.0"


class CheckpointError(ValueError):
  """The file is not a checkpoint this reader can read safely (the message says why)."""


class UnsupportedPickleError(CheckpointError, pickle.UnpicklingError):
  """The checkpoint names a global or construct outside the allowed subset."""


class _Refusal(Exception):
  """A reason to refuse the file; `load` turns it into a CheckpointError."""

  def __init__(self, reason: str, unsupported: bool = False):
    super().__init__(reason)
    self.unsupported = unsupported


class _Global(NamedTuple):
  """A global the pickle named; inert, only compared by name."""
  module: str
  name: str


_STORAGE_GLOBALS = {_Global("torch", n): np.dtype(t) for n, t in STORAGE_DTYPES.items()}
_OD, _NS = _Global("collections", "OrderedDict"), _Global("argparse", "Namespace")
_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")
_PARAMETER = _Global("torch._utils", "_rebuild_parameter")
_SCALARS = {_Global("numpy.core.multiarray", "scalar"), _Global("numpy._core.multiarray", "scalar")}
_DTYPE, _ENCODE = _Global("numpy", "dtype"), _Global("_codecs", "encode")
_SIZE = _Global("torch", "Size")
ALLOWED = frozenset({_OD, _NS, _TENSOR, _PARAMETER, _DTYPE, _ENCODE, _SIZE, *_SCALARS,
                     *_STORAGE_GLOBALS})
# Opcodes that push their argument: numbers, strings, bytes.
_CONSTANTS = frozenset(["BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT",
                        "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                        "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"])
_KEY_TYPES = (str, int, float, bool, type(None), bytes)
_LEAF_TYPES = (str, int, float, bool, type(None), bytes, complex)
_MEMBER_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# NumPy's state of a numeric dtype: (version, byteorder, subarray, names, fields,
# elsize, alignment, flags); anything else (fields, object flags) is refused.
_DTYPE_STATE_REST = (None, None, None, -1, -1, 0)


class _DType:
  """`numpy.dtype(code, False, True)` awaiting its state (the byte order)."""

  def __init__(self, code: str):
    self.dtype = np.dtype(code)
    self.built = False


class _Storage(NamedTuple):
  array: np.ndarray
  key: str


class _Fresh:
  """Objects this read created that may receive one state update (BUILD)."""

  def __init__(self):
    self._ids, self._keep = set(), []

  def add(self, obj):
    self._ids.add(id(obj))
    self._keep.append(obj)  # keeps ids unique while the read runs
    return obj

  def take(self, obj) -> bool:
    if id(obj) in self._ids:
      self._ids.discard(id(obj))
      return True
    return False


def _plain_tuple(value) -> bool:
  """A tuple of None, bool, int, float, str and bytes only: safe to compare and hash."""
  return type(value) is tuple and all(type(v) in _KEY_TYPES for v in value)  # pylint: disable=unidiomatic-typecheck


def _int(value, what: str, low: int = 0, high: int = 1 << 62) -> int:
  if type(value) is not int or not low <= value <= high:  # pylint: disable=unidiomatic-typecheck
    raise _Refusal(f"{what} is not an integer in [{low}, {high}]")
  return value


class _Reader:
  """One read of one zip archive; every bound is checked before memory is used."""

  def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str, file_bytes: int):
    self._archive, self._prefix, self._byteorder = archive, prefix, byteorder
    self._storages: dict[str, _Storage] = {}
    self._storage_bytes = 0
    self._view_bytes = 0
    self._file_bytes = file_bytes
    self._fresh = _Fresh()

  # -- archive members -----------------------------------------------------------------------
  def member(self, name: str, expected: int | None, limit: int) -> bytes:
    """The bytes of member `name`, refusing sizes that are not as declared or bounded."""
    try:
      info = self._archive.getinfo(name)
    except KeyError:
      raise _Refusal(f"the archive has no member {name!r}") from None
    if expected is not None and info.file_size != expected:
      raise _Refusal(f"member {name!r} declares {info.file_size} bytes but the pickle "
                     f"needs {expected}")
    if info.file_size > limit:
      raise _Refusal(f"member {name!r} declares {info.file_size} bytes, over the limit of "
                     f"{limit}")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
      raise _Refusal(f"member {name!r} uses zip compression method {info.compress_type} "
                     "(torch.save stores members uncompressed)")
    if info.file_size > MAX_INFLATION * info.compress_size + 4096:
      raise _Refusal(f"member {name!r} would inflate {info.compress_size} bytes to "
                     f"{info.file_size}, more than {MAX_INFLATION} times")
    if info.compress_size > self._file_bytes:
      raise _Refusal(f"member {name!r} declares more bytes than the file has")
    with self._archive.open(info) as f:
      data = f.read(info.file_size + 1)  # bounded: a member that inflates further is cut
    if len(data) != info.file_size:
      raise _Refusal(f"member {name!r} holds {len(data)} bytes, not the {info.file_size} "
                     "it declares")
    return data

  def storage(self, pid) -> _Storage:
    # Exact type checks before any comparison: an array compared elementwise
    # or hashed would raise, not refuse.
    if (type(pid) is not tuple or len(pid) != 5 or type(pid[0]) is not str  # pylint: disable=unidiomatic-typecheck
        or pid[0] != "storage"):
      raise _Refusal("a persistent id is not a torch storage", unsupported=True)
    _, kind, key, location, numel = pid
    if type(kind) is not _Global or kind not in _STORAGE_GLOBALS:  # pylint: disable=unidiomatic-typecheck
      raise _Refusal("a storage has an unsupported type", unsupported=True)
    if type(key) is not str or not _MEMBER_KEY.fullmatch(key) or type(location) is not str:  # pylint: disable=unidiomatic-typecheck
      raise _Refusal("a storage has a malformed key or location")
    dtype = _STORAGE_GLOBALS[kind].newbyteorder("<" if self._byteorder == "little" else ">")
    numel = _int(numel, "a storage's length")
    if key in self._storages:
      known = self._storages[key].array
      if known.dtype != dtype.newbyteorder("=") or known.size != numel:
        raise _Refusal(f"storage {key!r} is declared twice with different types or lengths")
      return self._storages[key]
    raw = self.member(f"{self._prefix}data/{key}", numel * dtype.itemsize,
                      limit=1 << 62)
    self._storage_bytes += len(raw)
    array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    self._storages[key] = _Storage(array, key)
    return self._storages[key]

  # -- allowed calls -------------------------------------------------------------------------
  def tensor(self, args) -> np.ndarray:
    if len(args) not in (6, 7) or not isinstance(args[0], _Storage):
      raise _Refusal("a tensor is not (storage, offset, size, stride, ...)")
    storage, offset, size, stride = args[0].array, args[1], args[2], args[3]
    if type(size) is not tuple or type(stride) is not tuple or len(size) != len(stride):  # pylint: disable=unidiomatic-typecheck
      raise _Refusal("a tensor's size and stride are not tuples of one length")
    if len(size) > MAX_NDIM:
      raise _Refusal(f"a tensor has more than {MAX_NDIM} dimensions")
    offset = _int(offset, "a tensor's offset")
    size = tuple(_int(s, "a tensor's size") for s in size)
    stride = tuple(_int(s, "a tensor's stride (negative strides are refused)") for s in stride)
    numel = math.prod(size)
    if numel == 0:
      if offset > storage.size:
        raise _Refusal("an empty tensor's offset is past the end of its storage")
      return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
      raise _Refusal(f"a tensor of size {size}, stride {stride} and offset {offset} reads "
                     f"element {last} of a storage of {storage.size}")
    self._view_bytes += numel * storage.itemsize
    if self._view_bytes > MAX_VIEW_FACTOR * self._storage_bytes + MAX_VIEW_SLACK:
      raise _Refusal(f"the tensors total {self._view_bytes} bytes from {self._storage_bytes} "
                     f"bytes of storage (more than {MAX_VIEW_FACTOR} times)")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride),
        writeable=False)
    return np.array(view)

  def call(self, func, args):
    """REDUCE and NEWOBJ: only the allowed globals, with checked arguments."""
    if type(args) is not tuple:  # pylint: disable=unidiomatic-typecheck
      raise _Refusal("a call's arguments are not a tuple")
    if func in (_OD, _NS):
      if args:
        raise _Refusal(f"{func.module}.{func.name} is called with arguments")
      return self._fresh.add(collections.OrderedDict() if func == _OD else argparse.Namespace())
    if func == _TENSOR:
      return self.tensor(args)
    if func == _PARAMETER:
      if not args or not isinstance(args[0], np.ndarray):
        raise _Refusal("a parameter does not wrap a tensor")
      return args[0]
    if func == _DTYPE:
      if not _plain_tuple(args) or len(args) != 3 or args[0] not in SCALAR_CODES or args[1:] != (
          False, True):
        raise _Refusal("a NumPy dtype is not a plain numeric one", unsupported=True)
      return self._fresh.add(_DType(args[0]))
    if func in _SCALARS:
      if (len(args) != 2 or not isinstance(args[0], _DType)
          or type(args[1]) is not bytes or len(args[1]) != args[0].dtype.itemsize):  # pylint: disable=unidiomatic-typecheck
        raise _Refusal("a NumPy scalar is not (numeric dtype, its bytes)")
      return np.frombuffer(args[1], args[0].dtype)[0].copy()
    if func == _ENCODE:
      if (not _plain_tuple(args) or len(args) != 2 or type(args[0]) is not str  # pylint: disable=unidiomatic-typecheck
          or args[1] not in ("latin1", "latin-1")):
        raise _Refusal("_codecs.encode is not called as pickle protocol 2 does for bytes")
      return args[0].encode("latin1")
    if func == _SIZE:
      if len(args) != 1 or type(args[0]) is not tuple:  # pylint: disable=unidiomatic-typecheck
        raise _Refusal("torch.Size is not called with a tuple")
      return tuple(_int(n, "a torch.Size entry") for n in args[0])
    raise _Refusal(f"{func.module}.{func.name} cannot be called", unsupported=True)

  def build(self, obj, state) -> None:
    """BUILD: only once, on a Namespace, OrderedDict or dtype this read created."""
    if not self._fresh.take(obj):
      raise _Refusal("the pickle updates the state of an object it did not just create",
                     unsupported=True)
    if isinstance(obj, _DType):
      if (not _plain_tuple(state) or len(state) != 8 or state[0] not in (3, 4)
          or state[1] not in ("<", ">", "|", "=") or state[2:] != _DTYPE_STATE_REST):
        raise _Refusal("a NumPy dtype has a state other than a plain numeric one's",
                       unsupported=True)
      if state[1] in "<>":
        obj.dtype = obj.dtype.newbyteorder(state[1])
      obj.built = True
    elif type(state) is not dict or not all(  # pylint: disable=unidiomatic-typecheck
        type(k) is str and not k.startswith("__") for k in state):  # pylint: disable=unidiomatic-typecheck
      raise _Refusal("an object's state is not a dict of attribute names")
    elif isinstance(obj, argparse.Namespace):
      vars(obj).update(state)
    # An OrderedDict's state is torch's `_metadata` (module versions): dropped.

  # -- the interpreter -----------------------------------------------------------------------
  def run(self, data: bytes):
    stack: list = []
    marks: list[int] = []
    memo: dict[int, Any] = {}
    created = 0

    def pop_mark() -> list:
      if not marks:
        raise _Refusal("the pickle pops a mark it never set")
      start = marks.pop()
      items = stack[start:]
      del stack[start:]
      return items

    def pop():
      if len(stack) <= (marks[-1] if marks else 0):
        raise _Refusal("the pickle pops an empty stack")
      return stack.pop()

    def top():
      if len(stack) <= (marks[-1] if marks else 0):
        raise _Refusal("the pickle uses an empty stack")
      return stack[-1]

    def key(k):
      if type(k) not in _KEY_TYPES:
        raise _Refusal(f"a dict key is a {type(k).__name__}, not a str or number")
      return k

    def setitems(target, items):
      if type(target) not in (dict, collections.OrderedDict) or len(items) % 2:
        raise _Refusal("the pickle sets items on something that is not a dict")
      for i in range(0, len(items), 2):
        target[key(items[i])] = items[i + 1]

    for opcode, arg, _ in pickletools.genops(data):
      created += 1
      if created > MAX_OBJECTS:
        raise _Refusal(f"the pickle has more than {MAX_OBJECTS} operations")
      name = opcode.name
      # Most frequent first: this loop is most of the reading time.
      if name in ("BINPUT", "LONG_BINPUT"):
        memo[_int(arg, "a memo index", high=MAX_OBJECTS)] = top()
      elif name in _CONSTANTS:
        if type(arg) is int and arg.bit_length() > 64:  # pylint: disable=unidiomatic-typecheck
          raise _Refusal("the pickle holds an integer wider than 64 bits")
        stack.append(arg)
      elif name in ("BINGET", "LONG_BINGET"):
        if arg not in memo:
          raise _Refusal("the pickle reads a memo entry it never wrote")
        stack.append(memo[arg])
      elif name == "MARK":
        marks.append(len(stack))
      elif name in ("PROTO", "FRAME"):
        continue
      elif name == "STOP":
        if len(stack) != 1 or marks:
          raise _Refusal("the pickle ends with a malformed stack")
        return stack[0]
      elif name == "NONE":
        stack.append(None)
      elif name in ("NEWTRUE", "NEWFALSE"):
        stack.append(name == "NEWTRUE")
      elif name == "EMPTY_DICT":
        stack.append({})
      elif name == "EMPTY_LIST":
        stack.append([])
      elif name == "EMPTY_TUPLE":
        stack.append(())
      elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = [pop() for _ in range(n)][::-1]
        stack.append(tuple(items))
      elif name == "TUPLE":
        stack.append(tuple(pop_mark()))
      elif name == "LIST":
        stack.append(pop_mark())
      elif name == "DICT":
        d = {}
        setitems(d, pop_mark())
        stack.append(d)
      elif name == "APPEND":
        value = pop()
        if type(top()) is not list:  # pylint: disable=unidiomatic-typecheck
          raise _Refusal("the pickle appends to something that is not a list")
        top().append(value)
      elif name == "APPENDS":
        items = pop_mark()
        if type(top()) is not list:  # pylint: disable=unidiomatic-typecheck
          raise _Refusal("the pickle appends to something that is not a list")
        top().extend(items)
      elif name == "SETITEM":
        value, k = pop(), pop()
        setitems(top(), [k, value])
      elif name == "SETITEMS":
        items = pop_mark()
        setitems(top(), items)
      elif name == "MEMOIZE":
        memo[len(memo)] = top()
      elif name == "POP":
        if marks and len(stack) == marks[-1]:
          marks.pop()
        else:
          pop()
      elif name == "POP_MARK":
        pop_mark()
      elif name == "DUP":
        stack.append(top())
      elif name in ("GLOBAL", "STACK_GLOBAL"):
        if name == "GLOBAL":
          module, _, attr = arg.partition(" ")
        else:
          attr, module = pop(), pop()
          if type(module) is not str or type(attr) is not str:  # pylint: disable=unidiomatic-typecheck
            raise _Refusal("STACK_GLOBAL names are not strings")
        g = _Global(module, attr)
        if g not in ALLOWED:
          raise _Refusal(
              f"the checkpoint contains '{module[:80]}.{attr[:80]}', which this reader does "
              "not load (only tensors, dicts, lists, argparse.Namespace and numbers are "
              "allowed, so that reading runs no code from the file); re-save it with only "
              "those, or load it with PyTorch if you trust it", unsupported=True)
        stack.append(g)
      elif name == "BINPERSID":
        stack.append(self.storage(pop()))
      elif name in ("REDUCE", "NEWOBJ"):
        args, func = pop(), pop()
        if not isinstance(func, _Global):
          raise _Refusal("the pickle calls something that is not an allowed global",
                         unsupported=True)
        if name == "NEWOBJ" and func not in (_OD, _NS):
          raise _Refusal(f"{func.module}.{func.name} cannot be instantiated",
                         unsupported=True)
        stack.append(self.call(func, args))
      elif name == "BUILD":
        state = pop()
        self.build(top(), state)
      else:
        raise _Refusal(f"the pickle uses opcode {name}, which checkpoints do not need",
                       unsupported=True)
    raise _Refusal("the pickle has no STOP")


def finish(obj: Any) -> Any:
  """A fresh copy of `obj` with only plain containers, arrays and numbers.

  Refuses anything else (storages outside tensors, bare globals, object
  arrays), containers that contain themselves and nesting deeper than
  `MAX_DEPTH`; shared sub-objects stay shared.
  """
  done: dict[int, Any] = {}
  active: set[int] = set()

  def walk(x, depth):
    if type(x) in _LEAF_TYPES:
      return x
    if isinstance(x, _DType):
      return x.dtype
    if isinstance(x, np.dtype):
      if x.hasobject or x.kind not in "biufc":
        raise _Refusal(f"the checkpoint holds a {x} dtype (only numeric ones are read)")
      return x
    if isinstance(x, (np.ndarray, np.generic)):
      if x.dtype.hasobject or x.dtype.kind not in "biufcV" or (
          x.dtype.kind == "V" and x.dtype != ml_dtypes.bfloat16):
        raise _Refusal(f"the checkpoint holds an array of {x.dtype} (only numeric ones are read)")
      return x
    if id(x) in done:
      return done[id(x)]
    if depth > MAX_DEPTH:
      raise _Refusal(f"the checkpoint nests containers more than {MAX_DEPTH} deep")
    if id(x) in active:
      raise _Refusal("a container in the checkpoint contains itself")
    active.add(id(x))
    if type(x) in (dict, collections.OrderedDict):
      out = type(x)((k, walk(v, depth + 1)) for k, v in x.items())
    elif type(x) in (list, tuple):
      out = type(x)(walk(v, depth + 1) for v in x)
    elif type(x) is argparse.Namespace:  # pylint: disable=unidiomatic-typecheck
      out = argparse.Namespace(**{k: walk(v, depth + 1) for k, v in vars(x).items()})
    else:
      what = f"{x.module}.{x.name}" if isinstance(x, _Global) else type(x).__name__
      raise _Refusal(f"the checkpoint holds a bare {what}, not a tensor, container or number")
    active.discard(id(x))
    done[id(x)] = out
    return out

  return walk(obj, 0)


def is_zip_checkpoint(path_or_file: Union[str, BinaryIO]) -> bool:
  return zipfile.is_zipfile(path_or_file)


# What malformed archives and pickles raise inside zipfile, zlib and pickletools.
_DECODE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error,
                  NotImplementedError, RuntimeError, UnicodeError, OverflowError, KeyError,
                  IndexError)


def _name(path_or_file) -> str:
  if isinstance(path_or_file, (str, os.PathLike)):
    return repr(os.fspath(path_or_file))
  name = getattr(path_or_file, "name", None)
  return repr(name) if isinstance(name, str) else "(file object)"


def load(path_or_file: Union[str, os.PathLike, BinaryIO]) -> Any:
  """The object `torch.save` wrote, tensors as NumPy arrays, containers plain.

  Returns nested dicts / OrderedDicts / lists / tuples / `argparse.Namespace`
  of `np.ndarray`, NumPy scalars and Python numbers and strings; raises
  `CheckpointError` (one sentence naming the file and the reason) on
  anything else. No PyTorch needed for zip files; see the module doc.
  """
  name = _name(path_or_file)
  if isinstance(path_or_file, (str, os.PathLike)) and not os.path.isfile(path_or_file):
    raise CheckpointError(f"cannot read checkpoint {name}: it is not a file.")
  try:
    try:
      is_zip = zipfile.is_zipfile(path_or_file)
    finally:
      if hasattr(path_or_file, "seek"):
        path_or_file.seek(0)
    if not is_zip:
      return finish(_load_with_torch(path_or_file))
    return _load_zip(path_or_file)
  except _Refusal as e:
    cls = UnsupportedPickleError if e.unsupported else CheckpointError
    raise cls(f"cannot read checkpoint {name}: {e}.") from None
  except RecursionError:
    raise CheckpointError(f"cannot read checkpoint {name}: it nests too deeply.") from None
  except _DECODE_ERRORS as e:
    if isinstance(e, CheckpointError):
      raise
    reason = str(e).rstrip(".") or type(e).__name__
    raise CheckpointError(f"cannot read checkpoint {name}: it is damaged or not a "
                          f"torch.save file ({type(e).__name__}: {reason[:200]}).") from None


def _load_zip(path_or_file):
  with zipfile.ZipFile(path_or_file) as archive:
    if hasattr(path_or_file, "seek"):
      file_bytes = path_or_file.seek(0, os.SEEK_END)
    else:
      file_bytes = os.path.getsize(path_or_file)
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(pickles) != 1:
      raise _Refusal(f"it is not a torch.save file (expected one <name>/data.pkl in the "
                     f"zip archive, found {len(pickles)})")
    prefix = pickles[0][:-len("data.pkl")]
    reader = _Reader(archive, prefix, "little", file_bytes)
    if f"{prefix}byteorder" in names:
      order = reader.member(f"{prefix}byteorder", None, limit=16)
      if order not in (b"little", b"big"):
        raise _Refusal("its byteorder record is neither 'little' nor 'big'")
      reader = _Reader(archive, prefix, order.decode(), file_bytes)
    data = reader.member(pickles[0], None, limit=MAX_PICKLE_BYTES)
    return finish(reader.run(data))


def _to_numpy(obj):
  import torch  # pylint: disable=import-outside-toplevel
  if isinstance(obj, torch.Tensor):
    obj = obj.detach().cpu()
    if obj.dtype == torch.bfloat16:  # NumPy has no bfloat16: through float32
      return obj.float().numpy().astype(ml_dtypes.bfloat16)
    return obj.numpy()
  if isinstance(obj, dict):
    return type(obj)((k, _to_numpy(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_to_numpy(v) for v in obj)
  return obj


def _torch_version_ok(version: str) -> bool:
  numbers = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
  want = tuple(int(p) for p in MIN_TORCH_FOR_LEGACY.split("."))
  return bool(numbers) and tuple(int(p or 0) for p in numbers.groups()) >= want


def _load_with_torch(path_or_file):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise _Refusal(
        "it is in PyTorch's legacy (non-zip) format, which needs PyTorch >= "
        f"{MIN_TORCH_FOR_LEGACY} to read safely: pip install 'itr_jax[torch]' (or re-save it "
        "with torch >= 1.6, whose zip format itr_jax reads without PyTorch)") from None
  if not _torch_version_ok(torch.__version__):
    raise _Refusal(
        f"it is in PyTorch's legacy (non-zip) format and the installed PyTorch "
        f"{torch.__version__} is older than {MIN_TORCH_FOR_LEGACY}, whose weights_only loader "
        "is the first without a known code-execution advisory; upgrade PyTorch or re-save "
        "the file in the zip format")
  with torch.serialization.safe_globals([argparse.Namespace]):
    try:
      obj = torch.load(path_or_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
      raise _Refusal(f"PyTorch's weights_only loader refused it ({str(e)[:200]})",
                     unsupported=True) from None
  return _to_numpy(obj)
