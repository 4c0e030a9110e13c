"""A run's working directory: its resolved config, refusing to mix runs, its lock.

A workdir belongs to one run. Restarting with the same config resumes it;
restarting with a config that changes what is trained (model, loss, data,
optimizer) is refused unless the user asks for a fresh start, in which case
the old run is moved aside, never deleted. The workdir may be a gs:// URL
(all access goes through `itr_jax.filesystem`).
"""
from __future__ import annotations

import contextlib
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


# Written into a workdir that by design holds no checkpoints (a member of a
# population sweep): why, in one sentence, for evaluate, retrieve and report.
NO_CHECKPOINTS_FILE = "NO_CHECKPOINTS"


def no_checkpoints_reason(workdir: str) -> Optional[str]:
  """Why `workdir` holds no checkpoints by design (its NO_CHECKPOINTS_FILE), else None."""
  path = fs.join(workdir, NO_CHECKPOINTS_FILE)
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    return f.read(4096).strip() or "it was written without checkpoints."


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


MAX_CONFIG_BYTES = 16 << 20  # a resolved config is a few KB


def read_config_json(path: str) -> dict:
  """The JSON object in a run's `config.json` at `path`; ValueError saying how
  to recover when it is too large, not JSON or not an object."""
  try:
    return fs.read_json_object(path, MAX_CONFIG_BYTES, what="run config")
  except ValueError as e:
    raise ValueError(
        f"{e}; restore it from the run's previous_runs/ or a backup, or start "
        "over with --fresh (the run is moved aside, not deleted).") from e


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = fs.join(workdir, CONFIG_FILE)
  if not fs.exists(workdir):
    raise FileNotFoundError(
        f"Workdir {workdir!r} does not exist; pass the --workdir of a run "
        "trained with itr-train or imported with itr-import-torch or "
        "itr-import-dual-encoder.")
  if not fs.exists(path):
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in {workdir!r}: is this a workdir written by "
        "itr-train (python -m itr_jax.train)?")
  return ml_collections.ConfigDict(read_config_json(path))


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
  old = read_config_json(path)
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


STAGING_INFIX = ".importing-"


def write_new(workdir: str, write) -> None:
  """Fills a new `workdir` by ``write(staging)``, then renames it into place.

  `write` fills a temporary sibling, ``<workdir>.importing-<host>-<pid>``;
  only when it returns is that renamed to `workdir`, so a failure (an error,
  a full disk, a kill) leaves `workdir` as it was and the command can simply
  be run again. Leftovers of killed writes by processes of this host that no
  longer run are removed first. `workdir` must be missing or empty.
  """
  base = workdir.rstrip("/")
  prefix = f"{base}{STAGING_INFIX}{socket.gethostname()}-"
  for leftover in fs.glob(f"{prefix}*"):
    pid = leftover[len(prefix):]
    if pid.isdigit() and not _pid_alive(int(pid), None):
      fs.rmtree(leftover)
  staging = f"{prefix}{os.getpid()}"
  fs.rmtree(staging)  # a leftover of a killed write by a process of the same id
  try:
    write(staging)
    if fs.isdir(workdir) and not fs.listdir(workdir) and not fs.is_remote(workdir):
      os.rmdir(workdir)
    if fs.exists(workdir) and fs.listdir(workdir):
      raise ValueError(f"--workdir {workdir!r} was filled by something else while the "
                       "import ran; nothing was overwritten.")
    fs.rename_tree(staging, workdir)
  except BaseException:
    fs.rmtree(staging)
    raise


def _move_aside(workdir: str) -> None:
  """Moves the previous run's files into previous_runs/<timestamp>/."""
  target = fs.join(workdir, "previous_runs", time.strftime("%Y%m%d-%H%M%S"))
  if fs.exists(target):
    raise FileExistsError(f"{target} exists; start again in a second.")
  fs.makedirs(target)
  for name in fs.listdir(workdir):
    if name != "previous_runs" and not name.startswith(LOCK_FILE):
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


def _read_lock(path: str) -> tuple[Optional[dict], float]:
  """(holder record or None if unreadable, age in seconds); FileNotFoundError if gone."""
  age = time.time() - fs.mtime(path)
  try:
    with fs.open(path) as f:
      holder = json.loads(f.read(64 << 10))
  except FileNotFoundError:
    raise
  except Exception:  # pylint: disable=broad-except
    return None, age  # binary, half-written, or gone mid-read on gs://
  pid = holder.get("pid") if isinstance(holder, dict) else None
  if (not isinstance(holder, dict) or not isinstance(holder.get("host"), str)
      or type(pid) is not int or pid <= 0):  # pylint: disable=unidiomatic-typecheck
    return None, age  # '[]', no pid, pid 0 (os.kill(0) would signal our own group)
  return holder, age


def lock_holder(workdir: str) -> Optional[dict]:
  """The lock's record ({host, pid, start_time, ...}) if a live process holds it.

  A lock whose contents cannot be read as a holder counts as held until it
  is STALE_AFTER_SECONDS old (it may be one a trainer is writing right now),
  then as stale; its record is then {"unreadable": True}.
  """
  path = fs.join(workdir, LOCK_FILE)
  try:
    holder, age = _read_lock(path)
  except FileNotFoundError:
    return None
  except Exception:  # pylint: disable=broad-except
    return None  # gone between listing and reading (tf.io.gfile's NotFoundError)
  if holder is None:
    return {"unreadable": True, "host": "?", "pid": "?",
            "start_time": f"{int(age)} s ago"} if age < STALE_AFTER_SECONDS else None
  if holder.get("host") == socket.gethostname():
    alive = _pid_alive(holder["pid"], holder.get("pid_start_ticks"))
  else:
    alive = age < STALE_AFTER_SECONDS
  return holder if alive else None


class WorkdirLock:
  """`workdir/LOCK`: host, pid and start time of the trainer using the workdir.

  Taken with an exclusive create; a lock left by a dead process (same host:
  its pid is gone or reused; another host: no heartbeat for
  STALE_AFTER_SECONDS; unreadable contents: STALE_AFTER_SECONDS old) is taken
  over with a warning. Only process 0 of a multi-host run takes it. Usable as
  a context manager.

  Take-over is atomic (one winner): locally, only the process holding the
  take-over mutex `LOCK.takeover` (an exclusive create) may remove a stale
  LOCK, after checking under the mutex that LOCK is still the file it judged
  stale; then the exclusive create of LOCK decides. On gs:// the stale
  object is deleted only if its generation is the one judged stale, and the
  create is an upload with if-generation-match=0.

  A daemon thread renews the lock every HEARTBEAT_SECONDS (the mtime, or a
  rewrite on gs://), retrying failures; if the lock cannot be renewed for
  STALE_AFTER_SECONDS, or another process took it, `check()` raises
  WorkdirLockedError so the trainer stops instead of running unprotected.
  """

  def __init__(self, workdir: str):
    self.path = fs.join(workdir, LOCK_FILE)
    self.workdir = workdir
    self.remote = fs.is_remote(workdir)
    self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                   "pid_start_ticks": _process_start_ticks(os.getpid()),
                   "start_time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   "token": os.urandom(8).hex()}
    self._stop = threading.Event()
    self._held = False
    self.lost: Optional[str] = None

  def acquire(self) -> "WorkdirLock":
    if _process_index() != 0:
      return self
    fs.makedirs(self.workdir)
    for _ in range(5):
      if self._create_exclusive():
        self._held = True
        self._clean_leftovers()
        threading.Thread(target=self._heartbeat, daemon=True,
                         name="workdir-lock-heartbeat").start()
        return self
      holder = lock_holder(self.workdir)
      if holder is not None:
        raise WorkdirLockedError(
            f"Workdir {self.workdir!r} is in use by another "
            f"trainer (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"started {holder.get('start_time')}); wait for it to finish or "
            f"stop it, or use another --workdir." if not holder.get("unreadable") else
            f"Workdir {self.workdir!r} has a lock file whose contents cannot be read, "
            f"written {holder['start_time']}; it counts as held until it is "
            f"{STALE_AFTER_SECONDS} s old (a trainer may be starting), then it is taken over.")
      self._take_over_stale()
      time.sleep(0.05)
    raise WorkdirLockedError(f"Could not take the lock {self.path!r}; another "
                             "trainer is starting in this workdir.")

  def _create_exclusive(self) -> bool:
    return fs.create_exclusive(self.path, json.dumps(self.record))

  def _take_over_stale(self) -> None:
    """Removes LOCK if it is still the stale lock just judged so; one process at a time."""
    if self.remote:
      self._take_over_remote()
      return
    mutex = f"{self.path}.takeover"
    if not fs.create_exclusive(mutex, json.dumps(self.record)):
      # Another process is taking over (try again from the start), or one
      # was killed doing so: its mutex is removed like a stale lock.
      stale = _identity(mutex)
      if stale is not None and _mutex_stale(mutex):
        _remove_if_same(mutex, stale)
      return
    try:
      judged = _identity(self.path)
      if judged is None or lock_holder(self.workdir) is not None:
        return  # gone, or someone took it over and holds it now
      if _remove_if_same(self.path, judged):
        logging.warning("Took over the stale lock of a stopped trainer in %s (%s).",
                        self.workdir, judged[2][:200].decode("utf-8", "replace") or "empty")
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.remove(mutex)

  def _take_over_remote(self) -> None:
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    if not self.path.startswith("gs://"):
      try:
        fs.remove(self.path)  # other URL schemes: no conditional delete
      except FileNotFoundError:
        pass
      return
    blob = fs._gcs_blob(self.path)  # pylint: disable=protected-access
    try:
      blob.reload()
      generation = blob.generation
      if lock_holder(self.workdir) is not None:
        return
      blob.delete(if_generation_match=generation)
      logging.warning("Took over the stale lock of a stopped trainer in %s.", self.workdir)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
      pass  # gone or replaced meanwhile: someone else took it over

  def _clean_leftovers(self) -> None:
    """Removes `LOCK.stale-*` files older versions of this lock left behind."""
    if self.remote:
      return
    for name in os.listdir(self.workdir):
      if name.startswith(f"{LOCK_FILE}.stale-"):
        try:
          os.remove(os.path.join(self.workdir, name))
        except OSError:
          pass

  def _still_mine(self) -> bool:
    try:
      holder, _ = _read_lock(self.path)
    except FileNotFoundError:
      return False
    return holder is not None and holder.get("token") == self.record["token"]

  def _renew(self) -> None:
    if not self._still_mine():
      raise WorkdirLockedError("another process replaced or removed the lock")
    if self.remote:
      fs.atomic_write_text(self.path, json.dumps(self.record))
    else:
      os.utime(self.path)

  def _heartbeat(self) -> None:
    last_renewal = time.monotonic()
    wait = HEARTBEAT_SECONDS
    while not self._stop.wait(wait):
      try:
        self._renew()
        last_renewal, wait = time.monotonic(), HEARTBEAT_SECONDS
      except WorkdirLockedError as e:
        self.lost = str(e)
        return
      except Exception as e:  # pylint: disable=broad-except
        # A transient failure (network, a full disk): retry sooner.
        logging.warning("Could not renew the lock %s (%s); retrying.", self.path, e)
        wait = min(HEARTBEAT_SECONDS, 10)
        if time.monotonic() - last_renewal >= STALE_AFTER_SECONDS - HEARTBEAT_SECONDS:
          self.lost = (f"it could not be renewed for {int(time.monotonic() - last_renewal)} s "
                       f"({e})")
          return

  def check(self) -> None:
    """Raises WorkdirLockedError if the lock was lost (see the class doc)."""
    if self.lost:
      raise WorkdirLockedError(
          f"Stopped: the lock of workdir {self.workdir!r} was lost ({self.lost}), so "
          "another trainer may take the workdir over; the last checkpoint is kept, and "
          "running the same command again resumes from it.")

  def release(self) -> None:
    self._stop.set()
    if not self._held:
      return
    self._held = False
    if self._still_mine():
      fs.remove(self.path)

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def _mutex_stale(path: str) -> bool:
  """Whether the take-over mutex was left by a process killed while taking over."""
  try:
    holder, age = _read_lock(path)
  except FileNotFoundError:
    return False
  if holder is not None and holder.get("host") == socket.gethostname():
    return not _pid_alive(holder["pid"], holder.get("pid_start_ticks"))
  return age > STALE_AFTER_SECONDS


def _identity(path: str) -> Optional[tuple]:
  """(inode, mtime, contents) of a small file, or None if it is gone: inode
  numbers alone are reused as soon as a file is deleted."""
  try:
    st = os.stat(path)
    with open(path, "rb") as f:
      return st.st_ino, st.st_mtime_ns, f.read(64 << 10)
  except FileNotFoundError:
    return None


def _remove_if_same(path: str, identity: tuple) -> bool:
  """Removes `path` if it is still the file `identity` describes, atomically:
  it is renamed to a unique name first and put back if it is another file."""
  aside = f"{path}.stale-{os.getpid()}-{os.urandom(4).hex()}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return False
  got = _identity(aside)
  if got == identity:
    with contextlib.suppress(FileNotFoundError):
      os.remove(aside)
    return True
  if got is None:
    return False  # removed meanwhile (a new holder cleaning leftovers)
  with contextlib.suppress(FileExistsError, FileNotFoundError):
    os.link(aside, path)  # not the file judged stale: put it back
  with contextlib.suppress(FileNotFoundError):
    os.remove(aside)
  return False
