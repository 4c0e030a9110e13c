"""A run's working directory: its resolved config, refusing to mix runs, its lock.

A workdir belongs to one run. Restarting with the same config resumes it;
restarting with a config that changes what is trained (model, loss, data,
optimizer) is refused unless the user asks for a fresh start, in which case
the old run is moved aside, never deleted. The workdir may be a gs:// URL
(all access goes through `itr_jax.filesystem`).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Optional

import ml_collections

from itr_jax import filesystem as fs
from itr_jax.training import paths

CONFIG_FILE = "config.json"
# Fields that may change between restarts of the same run: they change how a
# run is observed or how long it goes on, not what it computes.
RESUMABLE_FIELDS = (
    "train.num_epochs", "train.max_steps", "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "eval.", "data.data_dir", "data.dev_max_images",
    "data.test_split",
    # Restoring re-places the state on the new mesh; the global batch, and so
    # the result (up to float rounding), does not depend on the device count.
    "mesh", "sharding.",
)


def _process_index() -> int:
  import jax  # pylint: disable=import-outside-toplevel  # keeps `--help` fast
  return jax.process_index()


def flatten(tree: dict, prefix: str = "") -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}: config fields by dotted name."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _read_config_json(path: str) -> dict:
  try:
    with fs.open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise ValueError(
        f"{path} is not valid JSON ({e}); restore it from the run's "
        "previous_runs/ or a backup, or start over with --fresh (the run is "
        "moved aside, not deleted).") from e


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = fs.join(workdir, CONFIG_FILE)
  if not fs.exists(workdir):
    raise FileNotFoundError(
        f"Workdir {workdir!r} does not exist; pass the --workdir of a run "
        "trained with itr-train or imported with itr-import-torch.")
  if not fs.exists(path):
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in {workdir!r}: is this a workdir written by "
        "itr-train (python -m itr_jax.train)?")
  return ml_collections.ConfigDict(_read_config_json(path))


def config_differences(old: dict, new: dict) -> list[str]:
  """Dotted names of fields that differ and would make resuming wrong."""
  old_flat, new_flat = flatten(old), flatten(new)
  # Fields the old run's config lacks were added to itr_jax since: not a
  # difference in what the run computes.
  keys = sorted(set(old_flat))
  return [k for k in keys
          if old_flat.get(k) != new_flat.get(k)
          and not any(k == f or (f.endswith(".") and k.startswith(f))
                      for f in RESUMABLE_FIELDS)]


def check(workdir: str, config: ml_collections.ConfigDict, *,
          fresh: bool = False) -> None:
  """Raises ValueError if `workdir` holds a run `config` cannot resume.

  Writes nothing. With `fresh`, any earlier run is acceptable (it will be
  moved aside by `prepare`).
  """
  path = fs.join(workdir, CONFIG_FILE)
  if fresh or not fs.exists(path):
    return
  old = _read_config_json(path)
  # Runs recorded before paths were stored absolute resume from where they
  # started: read their relative paths against the current directory.
  paths.resolve_config_paths(old)
  new = json.loads(config.to_json())
  diffs = config_differences(old, new)
  if diffs:
    details = ", ".join(
        f"{k}: {flatten(old).get(k)!r} -> {flatten(new).get(k)!r}" for k in diffs)
    raise ValueError(
        f"Workdir {workdir!r} holds a run with a different config ({details}). "
        "Use another --workdir, or pass --fresh to move that run aside "
        "(it is kept under previous_runs/) and start over.")


def prepare(workdir: str, config: ml_collections.ConfigDict, *,
            fresh: bool = False) -> None:
  """Checks `workdir` against `config`, then records the resolved config."""
  check(workdir, config, fresh=fresh)
  fs.makedirs(workdir)
  path = fs.join(workdir, CONFIG_FILE)
  if fresh and fs.exists(path) and _process_index() == 0:
    _move_aside(workdir)
  if _process_index() == 0:
    fs.atomic_write_text(path, config.to_json(indent=2))


def _move_aside(workdir: str) -> None:
  """Moves the previous run's files into previous_runs/<timestamp>/."""
  target = fs.join(workdir, "previous_runs", time.strftime("%Y%m%d-%H%M%S"))
  if fs.exists(target):
    raise FileExistsError(f"{target} exists; start again in a second.")
  fs.makedirs(target)
  for name in fs.listdir(workdir):
    if name not in ("previous_runs", LOCK_FILE):
      fs.rename_tree(fs.join(workdir, name), fs.join(target, name))


# --- one trainer per workdir --------------------------------------------------

LOCK_FILE = "LOCK"
# A lock whose holder runs on another host is stale once its heartbeat (the
# file's mtime, refreshed every HEARTBEAT_SECONDS) is this old.
HEARTBEAT_SECONDS = 60
STALE_AFTER_SECONDS = 600


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the workdir."""


def _process_start_ticks(pid: int) -> Optional[int]:
  """Start time of `pid` in clock ticks since boot (Linux), to spot reused pids."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, ValueError, IndexError):
    return None


def _pid_alive(pid: int, start_ticks: Optional[int]) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  ticks = _process_start_ticks(pid)
  return start_ticks is None or ticks is None or ticks == start_ticks


def lock_holder(workdir: str) -> Optional[dict]:
  """The lock's record ({host, pid, start_time, ...}) if a live process holds it."""
  path = fs.join(workdir, LOCK_FILE)
  try:
    with fs.open(path) as f:
      holder = json.load(f)
    age = time.time() - fs.mtime(path)
  except FileNotFoundError:
    return None
  except Exception:  # pylint: disable=broad-except
    # Unreadable (a half-written lock of a killed process) or gone (a
    # NotFoundError of tf.io.gfile on gs://).
    return None
  if holder.get("host") == socket.gethostname():
    alive = _pid_alive(int(holder.get("pid", -1)), holder.get("pid_start_ticks"))
  else:
    alive = age < STALE_AFTER_SECONDS
  return holder if alive else None


class WorkdirLock:
  """`workdir/LOCK`: host, pid and start time of the trainer using the workdir.

  Taken with an exclusive create; a lock left by a dead process (same host:
  its pid is gone or reused; another host: no heartbeat for
  STALE_AFTER_SECONDS) is taken over with a warning. A daemon thread
  refreshes the file's mtime as a heartbeat. Only process 0 of a multi-host
  run takes it. Usable as a context manager.

  On gs:// the exclusive create is an upload with the precondition
  if-generation-match=0 (of two trainers, one succeeds), the heartbeat
  rewrites LOCK, and a stale lock is taken over by deleting it and creating
  it again: two trainers taking over the same stale lock at the same moment
  could both delete and one then create; the other is refused.
  """

  def __init__(self, workdir: str):
    self.path = fs.join(workdir, LOCK_FILE)
    self.workdir = workdir
    self.remote = fs.is_remote(workdir)
    self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                   "pid_start_ticks": _process_start_ticks(os.getpid()),
                   "start_time": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    self._stop = threading.Event()
    self._held = False

  def acquire(self) -> "WorkdirLock":
    if _process_index() != 0:
      return self
    fs.makedirs(self.workdir)
    for _ in range(3):
      try:
        fd = self._create_exclusive()
      except FileExistsError:
        holder = lock_holder(self.workdir)
        if holder is not None:
          raise WorkdirLockedError(
              f"Workdir {self.workdir!r} is in use by another "
              f"trainer (host {holder.get('host')}, pid {holder.get('pid')}, "
              f"started {holder.get('start_time')}); wait for it to finish or "
              f"stop it, or use another --workdir.") from None
        self._take_over_stale()
        continue
      if fd is not None:
        with os.fdopen(fd, "w") as f:
          json.dump(self.record, f)
      self._held = True
      threading.Thread(target=self._heartbeat, daemon=True,
                       name="workdir-lock-heartbeat").start()
      return self
    raise WorkdirLockedError(f"Could not take the lock {self.path!r}; another "
                             "trainer is starting in this workdir.")

  def _create_exclusive(self) -> Optional[int]:
    """A new lock file's descriptor (locally), None on gs:// (claim made);
    FileExistsError if the lock is taken."""
    if self.remote:
      if not fs.create_exclusive(self.path, json.dumps(self.record)):
        raise FileExistsError(self.path)
      return None
    return os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)

  def _take_over_stale(self) -> None:
    if self.remote:
      logging.warning("Took over the stale lock of a stopped trainer in %s.",
                      self.workdir)
      try:
        fs.remove(self.path)
      except FileNotFoundError:
        pass
      return
    # Renaming is atomic: of two processes taking over, one wins the rename.
    stale = f"{self.path}.stale-{os.getpid()}"
    try:
      os.rename(self.path, stale)
    except FileNotFoundError:
      return
    try:
      with open(stale) as f:
        old = f.read().strip()
    except OSError:
      old = ""
    os.remove(stale)
    logging.warning("Took over the stale lock of a stopped trainer in %s (%s).",
                    os.path.dirname(self.path), old or "unreadable")

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        if self.remote:
          fs.atomic_write_text(self.path, json.dumps(self.record))
        else:
          os.utime(self.path)
      except Exception:  # pylint: disable=broad-except
        return

  def release(self) -> None:
    self._stop.set()
    if not self._held:
      return
    self._held = False
    try:
      with fs.open(self.path) as f:
        mine = json.load(f).get("pid") == os.getpid()
    except Exception:  # pylint: disable=broad-except
      mine = False
    if mine:
      fs.remove(self.path)

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
