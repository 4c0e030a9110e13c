"""Verified local copies of remote data files (gs://...), shared by a host's processes.

`.npy` features and caption embeddings are memory-mapped, which an object
store cannot do, so a dataset on gs:// is copied once to a local cache
(``config.data.local_cache_dir``) and memory-mapped from there: the batches
are then bitwise those of a local copy, and a training run reads the file
from Cloud Storage once instead of every epoch (an epoch reads each image
once per caption: 5x the feature file).

``stage(url, cache_dir)`` returns the local copy
``{cache_dir}/{scheme}/{bucket}/{object}``:

* the download goes to a temporary name and is renamed into place only after
  its size and CRC32C (gs://: the object's own checksum; other schemes: size
  only) match the source, so a killed download never looks complete;
* ``{copy}.staged.json`` records the source's generation, size and checksum
  and the copy's size and mtime; a later start re-uses the copy when both are
  unchanged (one metadata request, no re-reading), and copies again when the
  source or the copy changed;
* processes of one host staging the same file take an exclusive `fcntl` lock
  on ``{copy}.lock``: one downloads, the others wait and re-use its copy;
  the temporary file of a download that was killed is removed then;
* an object name with an empty, `.` or `..` part is refused: no copy lands
  outside the cache.

Each host keeps its own copy (hosts share no disk); each then reads only the
rows of its share of every batch.

>>> local_path("gs://bucket/f30k/train_ims.npy", "/cache")
'/cache/gs/bucket/f30k/train_ims.npy'
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import shutil

from itr_jax import filesystem as fs

RECORD_SUFFIX = ".staged.json"
_CHUNK = 8 << 20
_DEFAULT_CACHE = os.path.join("~", ".cache", "itr_jax", "staged")


def cache_dir(configured: str) -> str:
  """`configured` (config.data.local_cache_dir), or ~/.cache/itr_jax/staged if ''."""
  return fs.absolute(configured or _DEFAULT_CACHE)


def local_path(url: str, cache: str) -> str:
  """Where `url` is staged under `cache`: ``{cache}/{scheme}/{bucket}/{object}``."""
  scheme, _, rest = url.partition("://")
  parts = rest.strip("/").split("/")
  if any(p in ("", ".", "..") for p in parts) or "/" in scheme or scheme in ("", ".", ".."):
    raise ValueError(f"cannot stage {url!r}: its name has an empty, '.' or '..' part, "
                     "which would map outside the staging cache; rename the object.")
  return os.path.join(cache, scheme, *parts)


def _source_state(url: str) -> dict:
  """Size and version of `url`: gs:// its generation and CRC32C (one request)."""
  if url.startswith("gs://"):
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    blob = fs._gcs_blob(url)  # pylint: disable=protected-access
    try:
      blob.reload()
    except exceptions.NotFound as e:
      raise FileNotFoundError(f"No such file: {url!r}") from e
    return {"size": int(blob.size), "generation": int(blob.generation),
            "crc32c": blob.crc32c}
  if not fs.exists(url):
    raise FileNotFoundError(f"No such file: {url!r}")
  return {"size": fs.getsize(url), "mtime": fs.mtime(url)}


def crc32c(path: str) -> str:
  """Base64 of the big-endian CRC32C of a local file (GCS's `crc32c` field)."""
  import google_crc32c  # pylint: disable=import-outside-toplevel
  checksum = google_crc32c.Checksum()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      checksum.update(chunk)
  return base64.b64encode(checksum.digest()).decode("ascii")


def _copy_state(path: str) -> dict:
  stat = os.stat(path)
  return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_record(path: str) -> dict | None:
  try:
    return fs.read_json(path + RECORD_SUFFIX, 1 << 20, what="staging record")
  except (OSError, ValueError):
    return None


def _download(url: str, state: dict, dst: str) -> None:
  """Copies `url` to `dst` (a temporary name) and checks it against `state`."""
  if url.startswith("gs://"):
    # Parallel ranged reads for large objects (threads: no pickling).
    from google.cloud.storage import transfer_manager  # pylint: disable=import-outside-toplevel
    transfer_manager.download_chunks_concurrently(
        fs._gcs_blob(url), dst, chunk_size=32 << 20,  # pylint: disable=protected-access
        worker_type=transfer_manager.THREAD, max_workers=8,
        crc32c_checksum=False)  # checked below, on the bytes on disk
  else:
    fs.copy(url, dst)
  size = os.path.getsize(dst)
  if size != state["size"]:
    raise OSError(f"staging {url!r}: copied {size} bytes, the source has "
                  f"{state['size']}")
  if state.get("crc32c") and crc32c(dst) != state["crc32c"]:
    raise OSError(f"staging {url!r}: the copy's CRC32C differs from the "
                  "object's; the download was damaged (run again)")


@contextlib.contextmanager
def _locked(path: str):
  with open(path + ".lock", "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # released on close
    yield


def _remove_stale_temporaries(dst: str) -> None:
  """Deletes `{dst}.tmp-*` downloads of killed processes. Called holding the
  file's lock, which every downloader of `dst` holds while copying."""
  directory, base = os.path.split(dst)
  for name in os.listdir(directory):
    if name.startswith(f"{base}.tmp-"):
      logging.warning("removing %s, a download of a killed process", name)
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, name))


def stage(url: str, cache: str) -> str:
  """The verified local copy of file `url` under directory `cache` (see module doc).

  Raises FileNotFoundError if `url` does not exist, OSError if the cache has
  too little free space or the copy does not match the source.
  """
  dst = local_path(url, cache)
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  with _locked(dst):
    state = _source_state(url)
    record = _read_record(dst)
    if (record is not None and record.get("source") == url
        and record.get("source_state") == state and os.path.isfile(dst)
        and record.get("copy_state") == _copy_state(dst)):
      return dst
    free = shutil.disk_usage(os.path.dirname(dst)).free
    if free < state["size"]:
      raise OSError(
          f"staging {url!r} ({state['size'] / 2**30:.2f} GiB) needs more "
          f"than the {free / 2**30:.2f} GiB free in {cache!r}; point "
          "config.data.local_cache_dir at a larger local disk")
    _remove_stale_temporaries(dst)
    logging.info("staging %s (%.2f GiB) to %s", url, state["size"] / 2**30, dst)
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
      _download(url, state, tmp)
      os.replace(tmp, dst)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    fs.atomic_write_text(dst + RECORD_SUFFIX, json.dumps(
        {"source": url, "source_state": state, "copy_state": _copy_state(dst)}))
  return dst


def stage_dir(url: str, names, cache: str) -> str:
  """Stages the files `names` of directory `url` that exist there; returns
  the local directory (``local_path(url, cache)``)."""
  present = set(fs.listdir(url)) if fs.isdir(url) else set()
  if not present:
    raise FileNotFoundError(f"{url!r} does not exist or is empty")
  for name in names:
    if name in present:
      stage(fs.join(url, name), cache)
  return local_path(url, cache)
