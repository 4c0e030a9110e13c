"""Orbax checkpoints: the latest N plus the best one by dev RSUM, verified.

One `CheckpointManager` keeps both: its preservation policy is the union of
"latest N" and "best 1 by the `rsum` metric". Checkpoints written mid-epoch
carry no metrics, so they only ever count toward "latest N".

Each saved step gets an integrity record (`integrity.py`: size and SHA-256 of
every file). Opening the checkpoints for training inspects every entry of
`checkpoints/` first: a step whose files do not match its record, an empty or
partly copied step directory, a file where a step directory should be, or
unreadable metadata is moved to `checkpoints_corrupted/` with a warning
naming it; intact steps are never touched. Restoring then starts from the
newest remaining step. Leftovers of an interrupted save are removed (orbax's
tmp-directory cleanup) and `prune()` applies the keep policy to steps a kill
right after a save left behind.
"""
from __future__ import annotations

import contextlib
import gc
import json
import logging
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as pp

from itr_jax import filesystem as fs
from itr_jax.training import integrity

CORRUPTED_DIR = "checkpoints_corrupted"
_TMP_MARK = ".orbax-checkpoint-tmp"
# What a complete orbax step directory holds (StandardSave as item "default").
_REQUIRED = ("_CHECKPOINT_METADATA", "default/_METADATA")


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (disk full, read-only, ...)."""


class CheckpointRestoreError(RuntimeError):
  """An intact checkpoint does not fit the state it is restored into."""


def describe(error: BaseException, limit: int = 200) -> str:
  """`Type: first line` of an error, cut to `limit` characters (tensorstore
  errors carry kilobytes of spec)."""
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  text = text if len(text) <= limit else text[:limit] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _not_an_orbax_error(record: logging.LogRecord) -> bool:
  return record.levelno < logging.ERROR or "orbax" not in record.pathname


@contextlib.contextmanager
def quiet_failures():
  """Keeps a failed save or restore from printing a traceback per array.

  Orbax reads and writes arrays in concurrent tasks and threads; when they
  fail, each logs its traceback (asyncio's "Task exception was never
  retrieved", orbax's thread errors). The exception raised by the save or
  restore itself still reports the failure, in one sentence.
  """
  asyncio_logger, absl_logger = logging.getLogger("asyncio"), logging.getLogger("absl")
  level = asyncio_logger.level
  asyncio_logger.setLevel(logging.CRITICAL)
  absl_logger.addFilter(_not_an_orbax_error)
  try:
    yield
  finally:
    gc.collect()  # collect the failed tasks while their logs are muted
    asyncio_logger.setLevel(level)
    absl_logger.removeFilter(_not_an_orbax_error)


def _rsum(metrics: dict) -> float:
  return float(metrics["rsum"])


# orbax warnings about what itr_jax does by design: saves without metrics
# (mid-epoch checkpoints only count toward "latest N"), read-only managers
# (evaluation opens runs read-only: two warnings per opened run), and
# reading a step's metadata without naming its item's handler.
_EXPECTED_WARNINGS = ("Requested `tracked_metric`; did not provide metrics",
                      "read_only=True, setting save_interval_steps=0",
                      "Given directory is read only",
                      "was found in the checkpoint, but could not be restored")


class _NoMetricsWarningFilter(logging.Filter):
  """Drops orbax's `_EXPECTED_WARNINGS`."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not any(w in str(record.msg) for w in _EXPECTED_WARNINGS)


logging.getLogger("absl").addFilter(_NoMetricsWarningFilter())


def inspect_step(step_dir: str) -> tuple[str, Optional[str]]:
  """("verified" | "unverified" | "damaged", reason) for one step directory.

  "unverified": complete by orbax's markers but without an integrity record
  (written by an older itr_jax, or killed between the save and the record).
  """
  if not fs.isdir(step_dir):
    return "damaged", "it is a file, not a checkpoint directory"
  if integrity.has_record(step_dir):
    problem = integrity.verify(step_dir)
    return ("damaged", problem) if problem else ("verified", None)
  for rel in _REQUIRED:
    if not fs.isfile(fs.join(step_dir, rel)):
      return "damaged", f"it is incomplete ({rel} is missing)"
  for rel in ("_CHECKPOINT_METADATA", "metrics/metrics"):
    path = fs.join(step_dir, rel)
    if fs.exists(path):
      try:
        with fs.open(path) as f:
          json.load(f)
      except (OSError, ValueError) as e:
        return "damaged", f"{rel} is unreadable ({e})"
  return "unverified", None


class Checkpoints:
  """Saves and restores train states under `workdir/checkpoints`.

  `read_only=True` (evaluation) changes nothing on disk: damaged steps are
  only skipped, and the directory is not created.
  """

  def __init__(self, workdir: str, *, keep: int = 3, read_only: bool = False):
    if keep < 1:
      raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}.")
    self.keep = keep
    self.read_only = read_only
    self.directory = fs.join(fs.absolute(workdir), "checkpoints")
    self.corrupted_dir = fs.join(fs.dirname(self.directory), CORRUPTED_DIR)
    self.status: dict[int, str] = {}
    self.damaged: dict[int, str] = {}
    self._scan()
    self.manager = self._open_manager()

  def _open_manager(self) -> ocp.CheckpointManager:
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=self.keep),
        pp.BestN(get_metric_fn=_rsum, n=1, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=_rsum,
        best_mode="max",
        create=not self.read_only,
        read_only=self.read_only,
        # Leftovers of a save interrupted by a kill: never restorable.
        cleanup_tmp_directories=not self.read_only,
        # Synchronous saves: a checkpoint is complete when save() returns, so a
        # run killed right after cannot leave the only good one half-written.
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(self.directory, options=options)

  def _scan(self) -> None:
    """Classifies every step entry; sets damaged ones aside (unless read-only)."""
    names = sorted(fs.listdir(self.directory)) if fs.isdir(self.directory) else []
    for name in names:
      if not name.isdigit():
        continue  # orbax ignores other names (its tmp dirs are cleaned up)
      step = int(name)
      status, reason = inspect_step(fs.join(self.directory, name))
      self.status[step] = status
      if status == "damaged":
        self.damaged[step] = reason
        if not self.read_only:
          self._set_aside(step, reason)
    # Every process, whatever it found: the barrier must be reached by all.
    if not self.read_only and jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoints_scanned")

  def _set_aside(self, step: int, reason: str) -> None:
    if jax.process_index() == 0:
      target = integrity.move_aside(fs.join(self.directory, str(step)),
                                    self.corrupted_dir)
      logging.warning("Checkpoint step %d in %s is damaged (%s); moved it to "
                      "%s and using the previous one.", step, self.directory,
                      reason, target)
    self.status.pop(step, None)

  def all_steps(self) -> list[int]:
    """Steps present on disk that are not known to be damaged."""
    return [s for s in self.manager.all_steps() if s not in self.damaged]

  def latest_step(self) -> Optional[int]:
    steps = self.all_steps()
    return max(steps) if steps else None

  def metrics(self, step: int) -> Optional[dict]:
    try:
      return self.manager.metrics(step)
    except Exception:  # pylint: disable=broad-except
      return None  # unreadable metrics: the step still counts as "latest"

  def best_step(self) -> Optional[int]:
    """The step with the highest dev RSUM among checkpoints that have metrics.

    Orbax tracks it (`best_fn`); only a read-only view of a run whose best
    checkpoint is damaged rescans the others' metrics.
    """
    best = self.manager.best_step()
    if best is None or best not in self.damaged:
      return best
    scored = [(s, self.metrics(s)) for s in self.all_steps()]
    scored = [(s, m) for s, m in scored if m and "rsum" in m]
    if not scored:
      return None
    return max(scored, key=lambda sm: _rsum(sm[1]))[0]

  def best_metrics(self) -> Optional[dict]:
    step = self.best_step()
    return None if step is None else self.metrics(step)

  def extra(self, step: int) -> dict:
    """The `extra` dict saved with `step` ({} if none or unverified)."""
    step_dir = fs.join(self.directory, str(step))
    if not integrity.has_record(step_dir):
      return {}
    try:
      return integrity.read_record(step_dir).get("extra") or {}
    except integrity.IntegrityError:
      return {}

  def save(self, step: int, state: Any, metrics: Optional[dict] = None,
           extra: Optional[dict] = None) -> None:
    """Writes `step`, then its integrity record (holding `extra`, JSON).

    A failed write (e.g. a full disk) removes the partial step and raises
    CheckpointWriteError; earlier checkpoints are untouched.
    """
    try:
      with quiet_failures():
        self.manager.save(step, args=ocp.args.StandardSave(state),
                          metrics=metrics, force=True)
        self.manager.wait_until_finished()
      if jax.process_index() == 0:
        integrity.write_record(fs.join(self.directory, str(step)), extra)
    except Exception as e:  # pylint: disable=broad-except
      self._write_failed(step, e, state)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint_recorded_{step}")

  def _write_failed(self, step: int, error: Exception, state: Any):
    if jax.process_index() == 0:
      for name in fs.listdir(self.directory):
        if name == str(step) or name.startswith(f"{step}{_TMP_MARK}"):
          integrity.remove_tree(fs.join(self.directory, name))
    self.manager.reload()
    previous = self.latest_step()
    kept = (f"the previous checkpoint (step {previous}) is intact"
            if previous is not None else "no earlier checkpoint exists")
    if integrity.is_no_space(error):
      # About what one more checkpoint takes: the state's bytes, or the
      # previous checkpoint's if larger (metadata).
      need = max(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state)),
                 integrity.tree_bytes(fs.join(self.directory, str(previous)))
                 if previous is not None else 0)
      free = integrity.free_bytes(self.directory)
      raise CheckpointWriteError(
          f"The disk is full: checkpoint step {step} could not be written to "
          f"{self.directory} ({integrity.mib(free)} free, a checkpoint needs "
          f"about {integrity.mib(need)}); {kept}. Free some space and run the "
          "same command again to resume.") from error
    if isinstance(error, OSError):
      raise CheckpointWriteError(
          f"Checkpoint step {step} could not be written to {self.directory} "
          f"({error.strerror or error}); {kept}.") from error
    raise error

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores `step` into the structure (and shardings) of `abstract_state`."""
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def restore_latest(self, abstract_state: Any) -> tuple[Optional[int], Any]:
    """(step, state) of the newest checkpoint that restores; (None, None) if none.

    An unverified checkpoint (no integrity record) that fails to restore is
    set aside like a damaged one and the one before it is tried. A verified
    one that fails does not fit this run's state (another model or version):
    that raises CheckpointRestoreError instead of discarding intact work.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        with quiet_failures():
          return step, self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        if self.status.get(step) == "verified":
          raise CheckpointRestoreError(
              f"Checkpoint step {step} in {self.directory} is intact but does "
              f"not fit this run's model ({describe(e)}); it was written by "
              "another model or itr_jax version. Use another --workdir, or "
              "--fresh to move that run aside.") from e
        if self.read_only:
          raise
        self._set_aside(step, f"it cannot be restored: {describe(e)}")
        if jax.process_count() > 1:
          multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
        # A fresh manager: after a failed restore orbax no longer infers the
        # single-item layout, and every later restore would fail too.
        self.manager.close()
        self.manager = self._open_manager()
    return None, None

  def intact_step(self, step: int) -> Optional[str]:
    """None if `step` passes its integrity check (read-only callers); else why not."""
    if step in self.damaged:
      return self.damaged[step]
    status, reason = inspect_step(fs.join(self.directory, str(step)))
    if status == "damaged":
      self.damaged[step] = reason
    else:
      self.status[step] = status
    return reason

  def prune(self) -> None:
    """Deletes steps beyond the policy (latest N + best): a kill right after a
    save can leave them before orbax's own pruning ran."""
    if self.read_only:
      return
    steps = sorted(self.all_steps())
    keep = set(steps[-self.keep:])
    best = self.best_step()
    if best is not None:
      keep.add(best)
    for step in steps:
      if step not in keep:
        self.manager.delete(step)

  def close(self) -> None:
    self.manager.close()
