"""Orbax checkpoints: the latest N plus the best one by dev RSUM.

One `CheckpointManager` keeps both: its preservation policy is the union of
"latest N" and "best 1 by the `rsum` metric". Checkpoints written mid-epoch
carry no metrics, so they only ever count toward "latest N".
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as pp


def _rsum(metrics: dict) -> float:
  return float(metrics["rsum"])


class _NoMetricsWarningFilter(logging.Filter):
  """Drops orbax's warning for saves without metrics: by design here, mid-epoch
  checkpoints carry none (they only count toward "latest N")."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "Requested `tracked_metric`; did not provide metrics" not in str(record.msg)


logging.getLogger("absl").addFilter(_NoMetricsWarningFilter())


class Checkpoints:
  """Saves and restores train states under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int = 3):
    if keep < 1:
      raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}.")
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=keep),
        pp.BestN(get_metric_fn=_rsum, n=1, keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=_rsum,
        best_mode="max",
        create=True,
        # Synchronous saves: a checkpoint is complete when save() returns, so a
        # run killed right after cannot leave the only good one half-written.
        enable_async_checkpointing=False,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The step with the highest dev RSUM among checkpoints that have metrics."""
    scored = [(s, self.manager.metrics(s)) for s in self.manager.all_steps()]
    scored = [(s, m) for s, m in scored if m and "rsum" in m]
    if not scored:
      return None
    return max(scored, key=lambda sm: _rsum(sm[1]))[0]

  def best_metrics(self) -> Optional[dict]:
    step = self.best_step()
    return None if step is None else self.manager.metrics(step)

  def save(self, step: int, state: Any, metrics: Optional[dict] = None) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics,
                      force=True)
    self.manager.wait_until_finished()

  def restore(self, step: int, abstract_state: Any) -> Any:
    """Restores `step` into the structure (and shardings) of `abstract_state`."""
    return self.manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state))

  def restore_latest(self, abstract_state: Any) -> tuple[Optional[int], Any]:
    """(step, state) of the newest checkpoint that restores; (None, None) if none.

    A checkpoint that fails to restore (corrupted or partly written by a
    killed run) is moved to `checkpoints_corrupted/` next to the checkpoint
    directory, with a warning, and the one before it is tried. Nothing is
    deleted, so the only good checkpoint can never be lost.
    """
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        return step, self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning(
            "Checkpoint at step %d in %s cannot be restored (%s: %s); moving it "
            "aside and trying the previous one.", step, self.directory,
            type(e).__name__, e)
        self._move_aside(step)
    return None, None

  def _move_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      target = os.path.join(os.path.dirname(self.directory), "checkpoints_corrupted",
                            f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint_moved_aside_{step}")
    self.manager.reload()

  def close(self) -> None:
    self.manager.close()
