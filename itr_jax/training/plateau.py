"""Telling a user once that a flat loss is what their backbone's recipe does.

SGRAF's authors report that its loss stays flat for the first epochs at full
scale and only then falls (SAF around epoch 7-8, SGR around 12-13), and users
ask whether such a run is broken. `PlateauNotice` watches the epoch-mean
training loss of a backbone known to do this and says so once, when it has
moved less than `TOLERANCE` (relative) over the last `window` epochs.
"""
from __future__ import annotations

from typing import Optional

# Backbone (config.model.name) -> the epochs its official report shows flat.
KNOWN_PLATEAUS = {"sgr": "about 12-13", "saf": "about 7-8"}
TOLERANCE = 0.01


def is_flat(epoch_losses, window: int, tolerance: float = TOLERANCE) -> bool:
  r"""Whether the last `window` + 1 epoch means lie within `tolerance` of each other.

  .. math:: \max_{k} L_k - \min_{k} L_k \le \text{tolerance} \cdot |\bar L|,
            \quad k = E - \text{window}, \dots, E

  >>> is_flat([0.40, 0.399, 0.401], window=2)
  True
  >>> is_flat([0.40, 0.35, 0.30], window=2)
  False
  >>> is_flat([0.40, 0.40], window=2)  # not enough epochs yet
  False
  """
  if window < 1 or len(epoch_losses) < window + 1:
    return False
  last = [float(x) for x in epoch_losses[-(window + 1):]]
  mean = sum(last) / len(last)
  return max(last) - min(last) <= tolerance * abs(mean)


class PlateauNotice:
  """Collects epoch-mean losses; `message()` returns the notice once, else None.

  >>> notice = PlateauNotice("sgr", window=2)
  >>> [notice.end_epoch(x) is None for x in (0.4, 0.4)]
  [True, True]
  >>> print(notice.end_epoch(0.4).split(":")[0])
  The training loss has moved less than 1% over the last 2 epochs (0.4)
  >>> notice.end_epoch(0.4) is None  # said once
  True
  """

  def __init__(self, backbone: str, window: int):
    self.backbone = backbone
    self.window = window if backbone in KNOWN_PLATEAUS else 0
    self.losses: list[float] = []
    self.said = False

  def end_epoch(self, loss: float) -> Optional[str]:
    """Records one epoch's mean loss; the notice the first time the loss is flat."""
    self.losses.append(float(loss))
    if self.said or not is_flat(self.losses, self.window):
      return None
    self.said = True
    return (f"The training loss has moved less than {TOLERANCE:.0%} over the last "
            f"{self.window} epochs ({self.losses[-1]:.4g}): {self.backbone.upper()}'s "
            f"loss is known to stay flat for {KNOWN_PLATEAUS[self.backbone]} epochs at "
            "full scale before it falls (SGRAF authors' report); this alone does "
            "not mean the run is broken. Expected curves per backbone: the "
            "'itr_jax vs the official code' guide.")
