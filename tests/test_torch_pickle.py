"""The torch checkpoint reader is safe on any bytes: hostile files are refused.

Each hostile file is written here opcode by opcode (no PyTorch), in the
shape of what a real `torch.save` archive holds; the fuzz test mutates the
official fixture checkpoints (tests/fixtures/torch_checkpoints) in a child
process under a memory and CPU limit, so a crash, hang or memory blow-up
fails the test instead of the test run. Run this file as a script to fuzz
longer: `python tests/test_torch_pickle.py --fuzz SEED CASES SECONDS`.
"""
import argparse
import collections
import io
import os
import pickle
import random
import resource
import struct
import subprocess
import sys
import time
import types
import zipfile

import numpy as np
import pytest

from itr_jax.tools import torch_pickle

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torch_checkpoints")
CHECKPOINTS = [os.path.join(FIXTURES, f"{b}.pth.tar") for b in ("vse", "vse_infty", "sgr", "saf")]


# --- a tiny pickle assembler --------------------------------------------------------------------
def s(text: str) -> bytes:
  data = text.encode()
  return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def i(n: int) -> bytes:
  if -2**31 <= n < 2**31:
    return pickle.BININT + struct.pack("<i", n)
  data = n.to_bytes(9, "little", signed=True)
  return pickle.LONG1 + bytes([len(data)]) + data


def g(module: str, name: str) -> bytes:
  return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def t(*items: bytes) -> bytes:
  return pickle.MARK + b"".join(items) + pickle.TUPLE


def call(func: bytes, *args: bytes) -> bytes:
  return func + t(*args) + pickle.REDUCE


def dump(body: bytes) -> bytes:
  return pickle.PROTO + b"\x02" + body + pickle.STOP


def storage(numel: int, key: str = "0", kind: str = "FloatStorage") -> bytes:
  return t(s("storage"), g("torch", kind), s(key), s("cpu"), i(numel)) + pickle.BINPERSID


def tensor(numel: int, offset: int, size, stride, key="0") -> bytes:
  return call(g("torch._utils", "_rebuild_tensor_v2"), storage(numel, key), i(offset),
              t(*map(i, size)), t(*map(i, stride)), pickle.NEWFALSE,
              call(g("collections", "OrderedDict")))


def archive(pkl: bytes, members=None, compression=zipfile.ZIP_STORED) -> io.BytesIO:
  """A torch.save-shaped zip: ckpt/data.pkl, ckpt/byteorder, ckpt/data/<key>."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("ckpt/data.pkl", pkl)
    z.writestr("ckpt/byteorder", "little")
    for key, data in (members or {}).items():
      z.writestr(f"ckpt/data/{key}", data, compress_type=compression)
  buf.seek(0)
  return buf


FLOATS = {"0": np.arange(4, dtype=np.float32).tobytes()}


def test_assembler_builds_what_the_reader_reads():
  """The crafted files below differ from this valid one only in what they attack."""
  pkl = dump(pickle.EMPTY_DICT + s("w") + tensor(4, 1, (2,), (2,)) + pickle.SETITEM)
  out = torch_pickle.load(archive(pkl, FLOATS))
  np.testing.assert_array_equal(out["w"], [1.0, 3.0])


# --- object pointers through NumPy scalars and dtypes ---------------------------------------------
def _scalar(code: str, state: bytes, payload: bytes) -> bytes:
  dtype = call(g("numpy", "dtype"), s(code), pickle.NEWFALSE, pickle.NEWTRUE) + state + pickle.BUILD
  return dump(call(g("numpy._core.multiarray", "scalar"), dtype,
                   call(g("_codecs", "encode"), s(payload.decode("latin1")), s("latin1"))))


POINTER = struct.pack("<Q", 0xdeadbeef)
PLAIN_STATE = t(i(3), s("<"), pickle.NONE, pickle.NONE, pickle.NONE, i(-1), i(-1), i(0))


@pytest.mark.parametrize("pkl", [
    # an 'O' dtype: the scalar's bytes would be a PyObject* taken from the file
    _scalar("O8", PLAIN_STATE, POINTER),
    # a float dtype whose state sets NumPy's "holds objects" flags
    _scalar("f8", t(i(3), s("<"), pickle.NONE, pickle.NONE, pickle.NONE, i(-1), i(-1), i(63)),
            POINTER),
    # a structured dtype state (field names / fields) on a plain code
    _scalar("f8", t(i(3), s("<"), pickle.NONE, t(s("a")), pickle.EMPTY_DICT, i(8), i(1), i(0)),
            POINTER),
], ids=["object-dtype", "object-flags", "fields"])
def test_no_object_dtype_can_be_built(pkl):
  with pytest.raises(torch_pickle.CheckpointError, match="cannot read checkpoint .*dtype"):
    torch_pickle.load(archive(pkl))


def test_numpy_scalars_of_plain_dtypes_still_load():
  assert torch_pickle.load(archive(_scalar("f8", PLAIN_STATE, struct.pack("<d", 2.5)))) == 2.5
  with pytest.raises(torch_pickle.CheckpointError, match="NumPy scalar"):
    torch_pickle.load(archive(_scalar("f8", PLAIN_STATE, b"\x00" * 7)))  # short bytes


# --- tensors that do not fit their storage ------------------------------------------------------
@pytest.mark.parametrize("offset, size, stride, match", [
    (0, (100,), (1,), "reads element 99 of a storage of 4"),  # past the end: heap bytes
    (0, (2, 2), (1, 1 << 40), "reads element"),  # a huge stride
    (0, (2,), (-1,), "negative strides"),
    (-1, (1,), (1,), "offset"),
    (5, (1,), (1,), "reads element 5"),
    (5, (0,), (1,), "offset is past the end"),
    (4, (), (), "reads element 4"),  # a scalar one past the end
    (0, (1 << 40, 1 << 40), (0, 0), "tensors total"),  # zero strides: terabytes from 4 floats
], ids=["size", "stride", "negative-stride", "negative-offset", "offset", "empty-offset",
        "scalar", "broadcast"])
def test_tensor_views_must_fit_their_storage(offset, size, stride, match):
  pkl = dump(tensor(4, offset, size, stride))
  with pytest.raises(torch_pickle.CheckpointError, match=match):
    torch_pickle.load(archive(pkl, FLOATS))


def test_storage_length_must_match_its_member_before_decompressing():
  pkl = dump(tensor(4, 0, (4,), (1,)))
  with pytest.raises(torch_pickle.CheckpointError, match="declares 8 bytes but the pickle needs 16"):
    torch_pickle.load(archive(pkl, {"0": b"\x00" * 8}))  # member shorter than the storage
  big = dump(tensor(1 << 28, 0, (4,), (1,)))  # a 1 GiB storage ...
  with pytest.raises(torch_pickle.CheckpointError, match="declares 16 bytes but the pickle needs"):
    torch_pickle.load(archive(big, FLOATS))  # ... that the archive does not hold


def test_a_member_that_inflates_far_beyond_its_compressed_size_is_refused():
  numel = 4 << 20  # 16 MiB of zeros deflate to ~16 KiB; real checkpoints are stored
  pkl = dump(tensor(numel, 0, (4,), (1,)))
  zeros = {"0": bytes(4 * numel)}
  with pytest.raises(torch_pickle.CheckpointError, match="inflate .* more than 4 times"):
    torch_pickle.load(archive(pkl, zeros, compression=zipfile.ZIP_DEFLATED))
  # The same bytes stored (as torch.save does) are read.
  assert torch_pickle.load(archive(pkl, zeros)).shape == (4,)


def test_a_member_larger_than_declared_is_cut_at_the_declared_size():
  buf = archive(dump(tensor(4, 0, (4,), (1,))), {"0": bytes(16)})
  data = bytearray(buf.getvalue())
  # Patch the member's declared (uncompressed) size in both headers down to 8:
  # the reader must not read 16 bytes into an 8-byte storage.
  with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
    info = z.getinfo("ckpt/data/0")
  for sig, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
    pos = data.find(sig, info.header_offset if sig == b"PK\x03\x04" else 0)
    while sig == b"PK\x01\x02" and data[pos + 46:pos + 46 + 11] != b"ckpt/data/0":
      pos = data.find(sig, pos + 1)
    data[pos + field:pos + field + 4] = struct.pack("<I", 8)
  with pytest.raises(torch_pickle.CheckpointError, match="declares 8 bytes but the pickle needs 16"):
    torch_pickle.load(io.BytesIO(bytes(data)))


# --- state updates on anything but fresh containers ---------------------------------------------
def test_state_updates_on_shared_objects_are_refused():
  # BUILD on the Namespace class itself would replace its methods process-wide.
  cls_attack = dump(g("argparse", "Namespace") + pickle.EMPTY_DICT + s("__init__") + i(1)
                    + pickle.SETITEM + pickle.BUILD)
  # BUILD on an allowed function object.
  func_attack = dump(g("torch._utils", "_rebuild_tensor_v2") + pickle.EMPTY_DICT + pickle.BUILD)
  # A second BUILD on a dtype already used: would change it after the fact.
  dtype = call(g("numpy", "dtype"), s("f4"), pickle.NEWFALSE, pickle.NEWTRUE)
  twice = dump(dtype + pickle.BINPUT + b"\x00" + PLAIN_STATE + pickle.BUILD
               + pickle.POP + pickle.BINGET + b"\x00"
               + t(i(3), s(">"), pickle.NONE, pickle.NONE, pickle.NONE, i(-1), i(-1), i(0))
               + pickle.BUILD)
  for pkl in (cls_attack, func_attack, twice):
    with pytest.raises(torch_pickle.UnsupportedPickleError, match="state of an object"):
      torch_pickle.load(archive(pkl))
  assert "__init__" not in vars(argparse.Namespace) or argparse.Namespace.__init__ != 1
  # A valid checkpoint read afterwards is unaffected.
  ckpt = torch_pickle.load(CHECKPOINTS[0])
  assert isinstance(ckpt["opt"], argparse.Namespace) and ckpt["best_rsum"].dtype == np.float64


def test_namespace_state_may_not_set_dunder_attributes():
  pkl = dump(g("argparse", "Namespace") + pickle.EMPTY_TUPLE + pickle.NEWOBJ + pickle.EMPTY_DICT
             + s("__class__") + i(1) + pickle.SETITEM + pickle.BUILD)
  with pytest.raises(torch_pickle.CheckpointError, match="attribute names"):
    torch_pickle.load(archive(pkl))


# --- structures the rest of the program could not walk ------------------------------------------
@pytest.mark.parametrize("pkl, match", [
    (dump(pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00" + pickle.APPEND),
     "contains itself"),
    (dump(pickle.EMPTY_LIST * 200 + pickle.APPEND * 199), "nests containers more than 100"),
    (dump(pickle.EMPTY_DICT + pickle.EMPTY_LIST + i(1) + pickle.SETITEM), "dict key is a list"),
    (dump(storage(4)), "bare"),
    (dump(g("collections", "OrderedDict")), "bare collections.OrderedDict"),
    (dump(g("posix", "system")), "posix.system"),
    (dump(call(g("torch", "FloatStorage"))), "cannot be called"),
    (dump(pickle.INT + b"1\n"), "opcode INT"),
], ids=["cycle", "depth", "list-key", "bare-storage", "bare-global", "global", "storage-call",
        "text-opcode"])
def test_malformed_structures_are_refused(pkl, match):
  with pytest.raises(torch_pickle.CheckpointError, match=match):
    torch_pickle.load(archive(pkl, FLOATS))


def test_every_refusal_is_one_sentence_naming_the_file(tmp_path):
  path = tmp_path / "evil.pth.tar"
  path.write_bytes(archive(dump(tensor(4, 0, (100,), (1,))), FLOATS).getvalue())
  with pytest.raises(torch_pickle.CheckpointError) as info:
    torch_pickle.load(str(path))
  text = str(info.value)
  assert text.startswith(f"cannot read checkpoint {str(path)!r}: ") and text.endswith(".")
  assert text.count(". ") == 0 and "\n" not in text


# --- legacy (non-zip) files -----------------------------------------------------------------------
def test_legacy_files_need_a_safe_pytorch(tmp_path, monkeypatch):
  path = tmp_path / "old.pth.tar"
  path.write_bytes(pickle.dumps({"model": []}, protocol=2))
  monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.5.1+cpu"))
  with pytest.raises(torch_pickle.CheckpointError, match=r"PyTorch 2.5.1\+cpu is older than 2.6.0"):
    torch_pickle.load(str(path))
  monkeypatch.setitem(sys.modules, "torch", None)  # not installed
  with pytest.raises(torch_pickle.CheckpointError, match=r"needs PyTorch >= 2.6.0"):
    torch_pickle.load(str(path))
  assert torch_pickle._torch_version_ok("2.6.0") and torch_pickle._torch_version_ok("2.10.1")
  assert not torch_pickle._torch_version_ok("1.13.1")


# --- fuzzing ------------------------------------------------------------------------------------
ALLOWED_LEAVES = (str, int, float, bool, type(None), bytes, np.generic, np.dtype)


def check_plain(obj) -> None:
  """Asserts `obj` holds only containers, numeric arrays and plain values (iteratively)."""
  stack = [obj]
  while stack:
    x = stack.pop()
    if isinstance(x, (dict, collections.OrderedDict)):
      stack.extend(x.values())
      assert all(isinstance(k, (str, int, float, bool, type(None), bytes)) for k in x)
    elif isinstance(x, (list, tuple)):
      stack.extend(x)
    elif isinstance(x, argparse.Namespace):
      stack.extend(vars(x).values())
    elif isinstance(x, np.ndarray):
      assert not x.dtype.hasobject and x.dtype.kind in "biufcV"
      x.sum()  # every element readable
    else:
      assert isinstance(x, ALLOWED_LEAVES), type(x)
      assert not (isinstance(x, np.generic) and x.dtype.hasobject)


def _rezip(original: bytes, pkl: bytes) -> bytes:
  """`original` with its data.pkl replaced by `pkl` (other members as they were)."""
  out = io.BytesIO()
  with zipfile.ZipFile(io.BytesIO(original)) as src, zipfile.ZipFile(out, "w") as dst:
    for info in src.infolist():
      data = pkl if info.filename.endswith("data.pkl") else src.read(info)
      dst.writestr(info, data)
  return out.getvalue()


def _mutate(data: bytes, rng: random.Random) -> bytes:
  data = bytearray(data)
  kind = rng.randrange(5)
  if kind == 0:  # flip bytes
    for _ in range(rng.randint(1, 8)):
      data[rng.randrange(len(data))] = rng.randrange(256)
  elif kind == 1:  # truncate
    del data[rng.randrange(len(data)):]
  elif kind == 2:  # insert bytes
    pos = rng.randrange(len(data))
    data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
  elif kind == 3:  # overwrite with a large integer (sizes, offsets, lengths)
    pos = rng.randrange(max(1, len(data) - 4))
    data[pos:pos + 4] = struct.pack("<I", rng.choice([0x7fffffff, 0xffffffff, 1 << 20, 255, 0]))
  else:  # copy a slice elsewhere (repeated opcodes, memo references)
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.randint(1, 64))
    pos = rng.randrange(len(data))
    data[pos:pos] = data[a:b]
  return bytes(data)


def fuzz(seed: int, cases: int, seconds: float) -> tuple[int, list[str]]:
  """Loads `cases` mutations; returns (cases run, failures). Each case must load
  into plain values or raise CheckpointError."""
  rng = random.Random(seed)
  originals = []
  for path in CHECKPOINTS:
    with open(path, "rb") as f:
      raw = f.read()
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
      pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    originals.append((raw, pkl))
  failures, deadline, n = [], time.monotonic() + seconds, 0
  while n < cases and time.monotonic() < deadline:
    raw, pkl = originals[n % len(originals)]
    if rng.random() < 0.7:  # the pickle is where a parser can go wrong
      data = _rezip(raw, _mutate(pkl, rng))
    else:  # the archive: headers, sizes, compressed members
      data = _mutate(raw, rng)
    n += 1
    try:
      check_plain(torch_pickle.load(io.BytesIO(data)))
    except torch_pickle.CheckpointError:
      pass
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"case {n}: {type(e).__name__}: {str(e)[:200]}")
  return n, failures


def test_fuzz_mutated_checkpoints_load_or_are_refused():
  """Thousands of mutations in a child process limited to 1 GiB more address space
  and 60 s of CPU: a crash, hang or memory blow-up fails here."""
  result = subprocess.run(
      [sys.executable, __file__, "--fuzz", "20", "3000", "8"], capture_output=True,
      text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  ran = int(result.stdout.split("cases=")[1].split()[0])
  assert ran >= 200, result.stdout  # 3000 on an idle 2-core machine; fewer under load


def _limit_memory(extra_bytes: int) -> None:
  with open("/proc/self/statm") as f:
    pages = int(f.read().split()[0])
  limit = pages * os.sysconf("SC_PAGE_SIZE") + extra_bytes
  resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  resource.setrlimit(resource.RLIMIT_CPU, (60, 60))


if __name__ == "__main__" and sys.argv[1:2] == ["--fuzz"]:
  _limit_memory(1 << 30)
  seed, cases, seconds = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
  start = time.monotonic()
  ran, problems = fuzz(seed, cases, seconds)
  print(f"cases={ran} seconds={time.monotonic() - start:.1f} failures={len(problems)}")
  print("\n".join(problems[:20]))
  sys.exit(1 if problems else 0)
