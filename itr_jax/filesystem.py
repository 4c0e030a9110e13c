"""One file-system layer: local paths through `os`, URLs (gs://, ...) through tf.io.gfile.

Every file itr_jax reads or writes outside orbax goes through here, so any
path may be a `gs://bucket/...` URL (or another scheme TensorFlow's file
system supports). Local paths take the plain `os` calls they always took
(same speed, same atomic rename, same fsync). tf.io.gfile is the layer
orbax (via etils.epath), TensorBoard summaries and tf.data already use for
gs://, so one client and one set of credentials serve all of them.

Semantics on Cloud Storage differ from a POSIX disk:

* `replace` is a copy then a delete (GCS has no rename): a reader sees the
  old object or the complete new one, never a part, since each object is
  written whole; but between the copy and the delete both names exist.
* `open(path, "a")` re-uploads the whole object (TensorFlow's GCS file
  system reads it back and appends); fine for metrics.jsonl's few KB.
* Directories are name prefixes: `makedirs` writes an empty `dir/` marker.

>>> is_remote("gs://bucket/run"), is_remote("/tmp/run"), is_remote("run")
(True, False, False)
>>> join("gs://bucket/run", "config.json")
'gs://bucket/run/config.json'
>>> absolute("gs://bucket/run")
'gs://bucket/run'
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import IO, Iterator

# URL schemes go to tf.io.gfile; a path without "://" is local.
_SCHEME = "://"


def is_remote(path: str) -> bool:
  """Whether `path` is a URL (gs://, s3://, ...) rather than a local path."""
  return _SCHEME in str(path)


def _gfile():
  # Imported on first remote use: local runs of the ranking core need no TF.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile


def absolute(path: str) -> str:
  """A local path made absolute (with ~ expanded); URLs and '' unchanged."""
  if not path or is_remote(path):
    return path
  return os.path.abspath(os.path.expanduser(path))


def join(path: str, *names: str) -> str:
  """`os.path.join`, also for URLs (always '/')."""
  if is_remote(path):
    return "/".join([path.rstrip("/"), *(n.strip("/") for n in names)])
  return os.path.join(path, *names)


def dirname(path: str) -> str:
  if is_remote(path):
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head if _SCHEME in head and not head.endswith(":/") else path
  return os.path.dirname(path)


def basename(path: str) -> str:
  return path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(path)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
  if is_remote(path):
    return _gfile().exists(path) and not _gfile().isdir(path)
  return os.path.isfile(path)


def getsize(path: str) -> int:
  return _gfile().stat(path).length if is_remote(path) else os.path.getsize(path)


def makedirs(path: str) -> None:
  """Creates `path` and its parents; no error if it exists."""
  if is_remote(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
  """Names in directory `path` (no trailing '/' on subdirectories)."""
  if is_remote(path):
    return [n.rstrip("/") for n in _gfile().listdir(path)]
  return os.listdir(path)


def walk_files(path: str) -> Iterator[str]:
  """Paths relative to `path` ('/'-separated on URLs) of every file below it."""
  if not is_remote(path):
    for root, _, names in os.walk(path):
      for name in names:
        yield os.path.relpath(os.path.join(root, name), path)
    return
  base = path.rstrip("/") + "/"
  for root, _, names in _gfile().walk(path):
    prefix = root.rstrip("/") + "/"
    for name in names:
      yield (prefix + name)[len(base):]


def glob(pattern: str) -> list[str]:
  """Sorted paths matching `pattern` (shell wildcards)."""
  if is_remote(pattern):
    return sorted(_gfile().glob(pattern))
  import glob as glob_lib  # pylint: disable=import-outside-toplevel
  return sorted(glob_lib.glob(pattern))


def open(path: str, mode: str = "r", encoding: str | None = None) -> IO:  # pylint: disable=redefined-builtin
  """A file object; text modes read/write UTF-8 on URLs (gfile's only encoding).

  A missing file raises FileNotFoundError on URLs too.
  """
  if is_remote(path):
    if "r" in mode and not _gfile().exists(path):
      raise FileNotFoundError(f"No such file: {path!r}")
    return _gfile().GFile(path, mode)
  import builtins  # pylint: disable=import-outside-toplevel
  return builtins.open(path, mode, encoding=encoding)


def replace(src: str, dst: str) -> None:
  """Renames `src` to `dst`, replacing it: atomic locally, copy + delete on GCS."""
  if is_remote(src) or is_remote(dst):
    _gfile().rename(src, dst, overwrite=True)
  else:
    os.replace(src, dst)


def rename_tree(src: str, dst: str) -> None:
  """Moves file or directory `src` to `dst` (which must not exist).

  Locally one rename; on GCS each object is copied and deleted.
  """
  if not (is_remote(src) or is_remote(dst)):
    shutil.move(src, dst)
    return
  if not isdir(src):
    _gfile().rename(src, dst, overwrite=False)
    return
  for rel in list(walk_files(src)):
    target = join(dst, rel)
    makedirs(dirname(target))
    _gfile().rename(join(src, rel), target, overwrite=False)
  _gfile().rmtree(src)


def remove(path: str) -> None:
  """Deletes file `path`; FileNotFoundError if it is missing."""
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    try:
      _gfile().remove(path)
    except tf.errors.NotFoundError as e:
      raise FileNotFoundError(path) from e
  else:
    os.remove(path)


def rmtree(path: str) -> None:
  """Deletes directory `path` and everything below it; nothing if missing."""
  if is_remote(path):
    if _gfile().exists(path):
      _gfile().rmtree(path)
  else:
    shutil.rmtree(path, ignore_errors=True)


class TooLarge(ValueError):
  """A file holds more bytes than its reader accepts."""


def read_bounded(path: str, limit: int, what: str = "file") -> bytes:
  """The bytes of `path`, a file of at most `limit` bytes.

  A file over `limit` bytes raises `TooLarge` naming `what` and the limit:
  before reading when its size says so, else (a file still growing) once the
  read passes the limit. Memory follows the file's size, not the limit.
  Read failures raise as `errors(path)` lists.
  """
  size = getsize(path)
  if size > limit:
    raise TooLarge(f"{what} {path!r} holds more than {limit} bytes")
  with open(path, "rb") as f:
    data = f.read(size + 1)  # one read of what the file holds
    if len(data) <= size:
      return data
    # The file grew after its size was taken: read on, in chunks, to the limit.
    chunks, total = [data], len(data)
    while total <= limit:
      chunk = f.read(min(16 << 20, limit + 1 - total))
      if not chunk:
        break
      chunks.append(chunk)
      total += len(chunk)
  if total > limit:
    raise TooLarge(f"{what} {path!r} holds more than {limit} bytes")
  return b"".join(chunks)


def read_text(path: str, limit: int, what: str = "text file",
              encoding: str = "utf-8") -> str:
  """The text of `path`, at most `limit` bytes of `encoding` (``utf-8-sig``
  also drops a byte-order mark); `TooLarge`, or ValueError naming `what` and
  `path` if it is not in that encoding. Line ends are kept as they are."""
  data = read_bounded(path, limit, what)
  try:
    return data.decode(encoding)
  except UnicodeDecodeError as e:
    raise ValueError(f"{what} {path!r} is not UTF-8 text: {e}") from e


def read_json(path: str, limit: int, what: str = "JSON file"):
  """The JSON value in `path`, a UTF-8 file of at most `limit` bytes.

  A file over the limit raises `TooLarge`; one that is not UTF-8 JSON (or is
  nested too deeply to parse) raises ValueError naming `what` and `path`.
  Read failures raise as `errors(path)` lists.
  """
  text = read_text(path, limit, what)
  try:
    return json.loads(text)
  except (ValueError, RecursionError) as e:
    raise ValueError(f"{what} {path!r} is not valid JSON: {e}") from e


def read_json_object(path: str, limit: int, what: str = "JSON file") -> dict:
  """`read_json` of a file that must hold a JSON object; ValueError naming
  `what` and `path` if it holds another JSON value."""
  value = read_json(path, limit, what)
  if not isinstance(value, dict):
    raise ValueError(f"{what} {path!r} holds a JSON {type(value).__name__}, not an object")
  return value


def read_npz(path: str, limit: int, what: str = "NumPy .npz file") -> dict:
  """{name: array} of the .npz at `path` (at most `limit` bytes), no pickles.

  Checked before any array is read: the members' declared sizes together
  are at most 4x the file plus 16 MiB (a zip bomb's are not), and each
  member's .npy header declares a plain dtype and a shape that its declared
  size holds, so no read allocates more than the file can fill. A file that
  is not such an .npz raises ValueError naming `what` and `path`.
  """
  import struct  # pylint: disable=import-outside-toplevel
  import zipfile  # pylint: disable=import-outside-toplevel
  import zlib  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  size = getsize(path)
  if size > limit:
    raise TooLarge(f"{what} {path!r} holds more than {limit} bytes")
  try:
    with open(path, "rb") as f:
      with zipfile.ZipFile(f) as archive:
        members = archive.infolist()
        declared = sum(info.file_size for info in members)
        if declared > 4 * size + (16 << 20):
          raise ValueError(f"its members would inflate to {declared} bytes from {size}")
        for info in members:
          with archive.open(info) as member:
            _check_npy_header(member, info.filename, info.file_size)
      f.seek(0)
      with np.load(f, allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}
  # zipfile's errors for damaged or unusual archives: bad deflate streams
  # (zlib.error), unsupported methods (NotImplementedError), encryption
  # (RuntimeError), truncated or out-of-range header fields (struct.error,
  # OverflowError).
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
          NotImplementedError, RuntimeError, struct.error, OverflowError) as e:
    raise ValueError(f"{what} {path!r} is not a readable NumPy .npz: {e}") from e


def _check_npy_header(member, name: str, member_bytes: int) -> None:
  """ValueError unless the .npy header in `member` declares a dtype without
  objects and at most `member_bytes` of data."""
  import math  # pylint: disable=import-outside-toplevel
  from numpy.lib import format as npy  # pylint: disable=import-outside-toplevel
  version = npy.read_magic(member)
  if version == (1, 0):
    shape, _, dtype = npy.read_array_header_1_0(member)
  elif version == (2, 0):
    shape, _, dtype = npy.read_array_header_2_0(member)
  else:
    raise ValueError(f"member {name!r} has .npy format version {version}")
  if dtype.hasobject:
    raise ValueError(f"member {name!r} holds Python objects")
  if math.prod(shape) * dtype.itemsize > member_bytes:
    raise ValueError(f"member {name!r} declares a {shape} {dtype} array, more than "
                     f"its {member_bytes} bytes")


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` as `atomic_write_bytes` does."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` so that readers see the old or the new file, never a part.

  Locally: a temporary file, fsync, then an atomic rename. On GCS an object
  upload is already all-or-nothing, so it is written in place.
  """
  if is_remote(path):
    with _gfile().GFile(path, "wb") as f:
      f.write(data)
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def mtime(path: str) -> float:
  """Last modification time of `path`, seconds since the epoch."""
  if is_remote(path):
    return _gfile().stat(path).mtime_nsec / 1e9
  return os.path.getmtime(path)


def mtime_ns(path: str) -> int:
  """Last modification time of `path`, nanoseconds since the epoch."""
  if is_remote(path):
    return int(_gfile().stat(path).mtime_nsec)
  return os.stat(path).st_mtime_ns


def errors(path: str) -> tuple[type[BaseException], ...]:
  """What a failed read or write of `path` raises: OSError, and TensorFlow's
  OpError for URLs."""
  if not is_remote(path):
    return (OSError,)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return (OSError, tf.errors.OpError)


def create_exclusive(path: str, text: str) -> bool:
  """Writes `text` to a new file `path`; False if `path` already exists.

  Atomic: of two callers, one gets True. Locally an O_EXCL create; on gs://
  an upload with the precondition if-generation-match=0 (google-cloud-storage;
  tf.io.gfile has no conditional write). Other URL schemes: an exists check
  then a write, not atomic.
  """
  if path.startswith("gs://"):
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    try:
      _gcs_blob(path).upload_from_string(text, if_generation_match=0)
      return True
    except exceptions.PreconditionFailed:
      return False
  if is_remote(path):
    if exists(path):
      return False
    atomic_write_text(path, text)
    return True
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    f.write(text)
  return True


_client = None


def _gcs_blob(path: str):
  # google-cloud-storage honours STORAGE_EMULATOR_HOST (tests/gcs_emulator.py).
  global _client  # pylint: disable=global-statement
  from google.cloud import storage  # pylint: disable=import-outside-toplevel
  if _client is None:
    _client = storage.Client()
  bucket, _, name = path[len("gs://"):].partition("/")
  return _client.bucket(bucket).blob(name)


def copy(src: str, dst: str) -> None:
  """Copies file `src` to `dst`, replacing it (local or URL on either side)."""
  if is_remote(src) or is_remote(dst):
    _gfile().copy(src, dst, overwrite=True)
  else:
    shutil.copyfile(src, dst)


# Path objects' reprs in other libraries' messages (orbax, TFDS: etils'
# PosixGPath('/runs/a'), pathlib's PosixPath('/runs/a')) shown as the path.
_PATH_REPR = re.compile(r"\b(?:Posix|Windows|Pure\w*)?G?Path\((['\"])(.*?)\1\)")


def plain_paths(text: str) -> str:
  """`text` with path objects' reprs replaced by their quoted paths.

  >>> plain_paths("no step in PosixGPath('/runs/a/checkpoints')")
  "no step in '/runs/a/checkpoints'"
  """
  return _PATH_REPR.sub(r"\1\2\1", text)
