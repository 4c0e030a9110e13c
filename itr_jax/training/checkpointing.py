"""Orbax checkpoints: the latest N plus the best one by dev RSUM.

One `CheckpointManager` keeps both: its preservation policy is the union of
"latest N" and "best 1 by the `rsum` metric". Checkpoints written mid-epoch
carry no metrics, so they only ever count toward "latest N".
"""
from __future__ import annotations

import os
from typing import Any, Optional

import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as pp


def _rsum(metrics: dict) -> float:
  return float(metrics["rsum"])


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

  def close(self) -> None:
    self.manager.close()
