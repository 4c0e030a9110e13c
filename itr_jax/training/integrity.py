"""Checkpoint integrity records and the few file operations around them.

Every checkpoint step directory gets an integrity record, ``itr_integrity.json``,
written atomically after orbax has finalised the step:

    {"version": 1, "files": {relative path: {"bytes": n, "sha256": hex}}, "extra": {...}}

``verify(step_dir)`` recomputes it, so a single flipped byte in any array or
metadata file, a missing or truncated file, or a garbled record is detected
before the checkpoint is restored. All file-system access of the checkpoint
machinery goes through the small functions here, and they go through
`itr_jax.filesystem`, so checkpoints may live on gs://.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> atomic_write_text(os.path.join(d, "a"), "hello")
>>> write_record(d, extra={"k": 1})
>>> verify(d) is None, read_record(d)["extra"]
(True, {'k': 1})
>>> atomic_write_text(os.path.join(d, "a"), "hellO")
>>> verify(d)
"file 'a' does not match its checksum"
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
from typing import Optional

from itr_jax import filesystem as fs
from itr_jax.text_encoders.file_sha256 import file_sha256

RECORD_FILE = "itr_integrity.json"
MAX_RECORD_BYTES = 64 << 20  # one line per file of a step


class IntegrityError(ValueError):
  """A checkpoint's files do not match its integrity record."""


def list_files(directory: str) -> list[str]:
  """Relative paths of every file under `directory` but the record, sorted."""
  return sorted(rel for rel in fs.walk_files(directory) if rel != RECORD_FILE)


atomic_write_text = fs.atomic_write_text


def write_record(directory: str, extra: Optional[dict] = None) -> None:
  """Records size and SHA-256 of every file under `directory` (+ `extra`)."""
  files = {rel: {"bytes": fs.getsize(fs.join(directory, rel)),
                 "sha256": file_sha256(fs.join(directory, rel))}
           for rel in list_files(directory)}
  atomic_write_text(fs.join(directory, RECORD_FILE), json.dumps(
      {"version": 1, "files": files, "extra": extra or {}}, indent=1))


def has_record(directory: str) -> bool:
  return fs.isfile(fs.join(directory, RECORD_FILE))


def read_record(directory: str) -> dict:
  """The parsed record; IntegrityError if it is unreadable or malformed."""
  try:
    record = fs.read_json(fs.join(directory, RECORD_FILE), MAX_RECORD_BYTES,
                          what="integrity record")
    if not isinstance(record.get("files"), dict):
      raise ValueError("no 'files' table")
    return record
  except (*fs.errors(directory), ValueError, AttributeError) as e:
    raise IntegrityError(f"its integrity record {RECORD_FILE} is unreadable "
                         f"({e})") from e


def verify(directory: str) -> Optional[str]:
  """None if the record covers every file and each is present and matches;
  else what is wrong (a file the record does not list is not trusted)."""
  try:
    record = read_record(directory)
  except IntegrityError as e:
    return str(e)
  uncovered = sorted(set(list_files(directory)) - set(record["files"]))
  if uncovered:
    return (f"file {uncovered[0]!r} is not covered by its integrity record"
            + (f" (nor are {len(uncovered) - 1} more)" if len(uncovered) > 1 else ""))
  for rel, expected in sorted(record["files"].items()):
    path = fs.join(directory, rel)
    if not fs.isfile(path):
      return f"file {rel!r} is missing"
    if (fs.getsize(path) != expected.get("bytes")
        or file_sha256(path) != expected.get("sha256")):
      return f"file {rel!r} does not match its checksum"
  return None


ACCEPT_COMMAND = "python -m itr_jax.training.integrity --accept="


def accept(step_dir: str) -> None:
  """Records an unrecorded step as it is now: the user vouches for its bytes.

  For checkpoints written by an itr_jax without integrity records, or whose
  record a copy dropped; afterwards every change to them is detected.
  """
  if has_record(step_dir):
    raise ValueError(f"{step_dir} already has an integrity record; nothing to accept.")
  write_record(step_dir, extra={"accepted_without_record": time.strftime("%Y-%m-%d %H:%M:%S")})


def main(argv=None) -> None:
  """`python -m itr_jax.training.integrity --accept=<workdir>/checkpoints/<step>`."""
  from itr_jax import own_flags  # pylint: disable=import-outside-toplevel

  def define(values):
    from absl import flags  # pylint: disable=import-outside-toplevel
    flags.DEFINE_multi_string("accept", [], "A checkpoint step directory without an "
                              "integrity record to trust as it is now.", flag_values=values)

  values = own_flags.parse_own_flags(argv, define, usage=__doc__.split("\n\n")[0] + (
      "\n\n  " + ACCEPT_COMMAND + "<workdir>/checkpoints/<step>"))
  try:
    for step_dir in values.accept:
      if not fs.isdir(step_dir):
        raise ValueError(f"--accept={step_dir}: not a checkpoint step directory.")
      accept(step_dir)
      print(f"Recorded {step_dir}: it is trusted from now on as it is now.")
  except (ValueError, OSError) as e:
    print(f"Error: {e}", file=__import__("sys").stderr)
    raise SystemExit(1) from None


def move_aside(path: str, target_dir: str) -> str:
  """Moves `path` into `target_dir` under a timestamped name; returns the new path."""
  fs.makedirs(target_dir)
  base = f"{fs.basename(path)}-{time.strftime('%Y%m%d-%H%M%S')}"
  target, n = fs.join(target_dir, base), 1
  while (os.path.lexists(target) if not fs.is_remote(target) else fs.exists(target)):
    target, n = fs.join(target_dir, f"{base}.{n}"), n + 1
  fs.rename_tree(path, target)
  return target


remove_tree = fs.rmtree


def tree_bytes(path: str) -> int:
  """Total size of the files under `path` (0 if it does not exist)."""
  if not fs.isdir(path):
    return 0
  return sum(fs.getsize(fs.join(path, rel)) for rel in list_files(path))


def free_bytes(path: str) -> int:
  """Free space on the file system holding `path` (or its nearest existing
  parent); -1 for a URL (object stores report none)."""
  if fs.is_remote(path):
    return -1
  while path and not os.path.exists(path):
    path = os.path.dirname(path)
  return shutil.disk_usage(path or ".").free


def is_no_space(error: BaseException) -> bool:
  """Whether `error`, or an error it was raised from, means the disk is full."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(error)
    if "No space left on device" in text or "Disk quota exceeded" in text:
      return True
    error = error.__cause__ or error.__context__
  return False


def mib(n: int) -> str:
  return f"{n / 2**20:.1f} MiB"


if __name__ == "__main__":
  main()
