"""One-time value checks of data files, recorded next to them.

Scanning a 8.5 GB (Flickr30K) or 33 GB (COCO) feature file for NaN/Inf at
every start costs minutes. `run_once(path, name, check)` runs ``check()``
once and, if it passes, writes ``{path}.checked.json``: the file's size,
modification time (ns) and a fingerprint (sha256 of its first and last
MiB), and the names of the checks it passed. A later start trusts the record
when all three still match and skips the scan; a file rewritten since (any
change of size, mtime or those blocks) is checked again. When the record
cannot be written (a read-only data folder) the check runs at every start,
with a one-line note; it never fails for that reason.

Paths go through `itr_jax.filesystem`, so a gs:// data folder works too.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> np.save(f"{d}/x.npy", np.zeros(3))
>>> run_once(f"{d}/x.npy", "finite", lambda: None)  # checks, then records
True
>>> run_once(f"{d}/x.npy", "finite", lambda: 1 / 0)  # trusted: not run
False
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Callable

from itr_jax import filesystem as fs

SUFFIX = ".checked.json"
_BLOCK = 1 << 20  # fingerprinted bytes at each end of the file


def record_path(path: str) -> str:
  """``x.npy`` -> ``x.npy.checked.json``."""
  return path + SUFFIX


def file_state(path: str) -> dict:
  """Size, mtime (ns) and sha256 of the first and last MiB of `path`."""
  size, mtime_ns = fs.getsize(path), fs.mtime_ns(path)
  digest = hashlib.sha256()
  with fs.open(path, "rb") as f:
    digest.update(f.read(_BLOCK))
    if size > _BLOCK:
      f.seek(max(_BLOCK, size - _BLOCK))
      digest.update(f.read(_BLOCK))
  return {"size": int(size), "mtime_ns": int(mtime_ns),
          "head_tail_sha256": digest.hexdigest()}


def _read(path: str) -> dict | None:
  try:
    return fs.read_json(record_path(path), 1 << 20, what="check record")
  except (*fs.errors(path), ValueError):
    return None  # missing or unreadable: check again


def run_once(path: str, name: str, check: Callable[[], None], *,
             record: bool = True) -> bool:
  """Runs ``check()`` (which raises on bad values) unless recorded as passed.

  Args:
    path: the checked data file.
    name: what ``check`` checks, e.g. "finite"; a record holds every name
      that passed for the file's current state.
    check: reads `path` and raises if its values are bad.
    record: write the record when ``check()`` passes; False when it checks
      only part of the file (an existing record is still trusted).

  Returns:
    True if ``check`` ran (and passed), False if the record was trusted.
  """
  state = file_state(path)
  previous = _read(path)
  same = previous is not None and all(previous.get(k) == v
                                      for k, v in state.items())
  if same and name in previous.get("passed", []):
    return False
  check()
  # A file rewritten during the scan is not recorded.
  if not record or file_state(path) != state:
    return True
  passed = sorted(set(previous.get("passed", []) if same else []) | {name})
  try:
    fs.atomic_write_text(record_path(path), json.dumps({**state, "passed": passed}))
  except fs.errors(path) as e:
    logging.warning("cannot record the %s check of %s (%s): it runs again at "
                    "every start", name, path, e)
  return True
