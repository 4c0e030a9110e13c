"""Orbax checkpoints: the latest N plus the best one by dev RSUM, verified.

One `CheckpointManager` keeps them: `prune()` applies the union of
"latest N" and "best 1 by the `rsum` metric". Checkpoints written mid-epoch
carry no metrics, so they only ever count toward "latest N".

Each saved step gets an integrity record (`integrity.py`: size and SHA-256 of
every file). Opening the checkpoints for training inspects every entry of
`checkpoints/` first: a step whose files do not match its record, an empty or
partly copied step directory, a file where a step directory should be, or
unreadable metadata is moved to `checkpoints_corrupted/` with a warning
naming it; intact steps are never touched. A step without a record
covering every file is not trusted (see `inspect_step`). Restoring then starts from the
newest remaining step. Leftovers of an interrupted save are removed (orbax's
tmp-directory cleanup) and `prune()` applies the keep policy to steps a kill
right after a save left behind.
"""
from __future__ import annotations

import contextlib
import gc
import logging
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from itr_jax import filesystem as fs
from itr_jax.training import integrity
from itr_jax.training import state as state_lib

CORRUPTED_DIR = "checkpoints_corrupted"
# In checkpoints/ once an itr_jax that writes integrity records opened it: a
# step without a record there was cut between its save and its record.
RECORDS_MARKER = "RECORDED"
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
  text = fs.plain_paths(text)  # orbax names directories by their PosixGPath repr
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
  except BaseException:
    # Collect the failed tasks while their logs are muted. Only on failure:
    # a full collection costs ~0.25 s per save with a large heap.
    gc.collect()
    raise
  finally:
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
  """("verified" | "unrecorded" | "damaged", reason) for one step directory.

  Only "verified" steps (a record covering every file, all matching) are
  restored. "unrecorded": complete by orbax's markers but without an
  integrity record (written by an older itr_jax, killed between the save and
  the record, or copied without it); `integrity.accept` records it.
  """
  if not fs.isdir(step_dir):
    return "damaged", "it is a file, not a checkpoint directory"
  if integrity.has_record(step_dir):
    problem = integrity.verify(step_dir)
    return ("damaged", problem) if problem else ("verified", None)
  for rel in _REQUIRED:
    if not fs.isfile(fs.join(step_dir, rel)):
      return "damaged", f"it is incomplete ({rel} is missing)"
  return "unrecorded", (
      f"it has no integrity record {integrity.RECORD_FILE} (written by an older itr_jax, "
      "interrupted between its save and its record, or copied without it), so its "
      f"bytes cannot be checked; if you trust it, run {integrity.ACCEPT_COMMAND}"
      f"{step_dir}")


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
    # Orbax keeps every step; `prune()` applies the keep policy after each
    # save, so an old step that cannot be deleted costs a warning, never the
    # new step (orbax's own pruning fails the save).
    options = ocp.CheckpointManagerOptions(
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
    # The handler named: item_metadata (a checkpoint's tree, read to restore
    # older layouts) works before the first save or restore.
    return ocp.CheckpointManager(self.directory, options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())

  def _scan(self) -> None:
    """Classifies every step entry; sets damaged ones aside (unless read-only).

    Unrecorded steps are never restored. For training they are set aside
    (a kill between a save and its record), unless the directory was written
    by an itr_jax without records (no `RECORDS_MARKER`) and no verified step
    remains: then this refuses (CheckpointRestoreError), saying how to accept
    them, rather than start over.
    """
    names = sorted(fs.listdir(self.directory)) if fs.isdir(self.directory) else []
    found = {int(n): inspect_step(fs.join(self.directory, n)) for n in names if n.isdigit()}
    unrecorded = sorted(s for s, (status, _) in found.items() if status == "unrecorded")
    if (unrecorded and not self.read_only and RECORDS_MARKER not in names
        and not any(status == "verified" for status, _ in found.values())):
      raise CheckpointRestoreError(
          f"The checkpoints in {self.directory} (steps {unrecorded}) have no integrity "
          "record, so a damaged byte in them could not be detected and they are not "
          f"restored; if you trust them, run {integrity.ACCEPT_COMMAND}"
          f"{fs.join(self.directory, str(unrecorded[-1]))} (once per step) and run again, "
          "or start over with --fresh.")
    for step, (status, reason) in found.items():
      self.status[step] = status
      if status != "verified":
        self.damaged[step] = reason
        if not self.read_only:
          self._set_aside(step, reason)
    if not self.read_only and RECORDS_MARKER not in names and jax.process_index() == 0:
      fs.makedirs(self.directory)
      integrity.atomic_write_text(fs.join(self.directory, RECORDS_MARKER),
                                  "Every checkpoint step here gets an integrity record.\n")
    # Every process, whatever it found: the barrier must be reached by all.
    if not self.read_only and jax.process_count() > 1:
      multihost_utils.sync_global_devices("checkpoints_scanned")

  def _set_aside(self, step: int, reason: str) -> None:
    if jax.process_index() == 0:
      target = integrity.move_aside(fs.join(self.directory, str(step)),
                                    self.corrupted_dir)
      logging.warning("Checkpoint step %d in %s is %s (%s); moved it to "
                      "%s and using the previous one.", step, self.directory,
                      "not trusted" if self.status.get(step) == "unrecorded" else "damaged",
                      reason, target)
    self.status.pop(step, None)

  def all_steps(self) -> list[int]:
    """Steps present on disk that are not known to be damaged or unrecorded."""
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
    self.prune()

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
    """Restores `step` into the structure (and shardings) of `abstract_state`.

    A checkpoint of an older train-state layout is converted
    (`state.restore_target`).
    """
    saved = getattr(self.manager.item_metadata(step), "tree", None)
    target, convert = state_lib.restore_target(
        saved.keys() if isinstance(saved, dict) else (), abstract_state)
    return convert(self.manager.restore(step, args=ocp.args.StandardRestore(target)))

  def restore_latest(self, abstract_state: Any) -> tuple[Optional[int], Any]:
    """(step, state) of the newest verified checkpoint; (None, None) if none.

    Every step restored was verified against its integrity record, so one
    that fails does not fit this run's state (another model or version):
    that raises CheckpointRestoreError instead of discarding intact work.
    """
    for step in sorted(self.all_steps(), reverse=True):
      try:
        with quiet_failures():
          return step, self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        raise CheckpointRestoreError(
            f"Checkpoint step {step} in {self.directory} is intact but does "
            f"not fit this run's model ({describe(e)}); it was written by "
            "another model or itr_jax version. Use another --workdir, or "
            "--fresh to move that run aside.") from e
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
    """Deletes steps beyond the policy (latest N + the best by dev RSUM).

    A step that cannot be deleted (permissions, an immutable file) is kept
    with a warning naming it; the newer steps are never touched.
    """
    if self.read_only:
      return
    steps = sorted(self.all_steps())
    keep = set(steps[-self.keep:])
    best = self.best_step()
    if best is not None:
      keep.add(best)
    for step in steps:
      if step not in keep:
        try:
          self.manager.delete(step)
        except Exception as e:  # pylint: disable=broad-except
          logging.warning(
              "Could not delete old checkpoint step %d in %s (%s); it is kept (the "
              "newer checkpoints are intact). Delete it by hand to free its space.",
              step, self.directory, describe(e))
          self.manager.reload()

  def close(self) -> None:
    self.manager.close()
