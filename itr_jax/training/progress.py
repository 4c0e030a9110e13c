"""The training progress bar: steps/s and ETA of training steps alone.

tqdm's rate and ETA count wall-clock time between updates, so the first
step's compilation (seconds to minutes), dev evaluations and checkpoint writes
would all look like slow training and inflate the ETA. `TrainingBar.paused()`
takes such a stretch out of the bar's clock (its elapsed time and its
smoothed rate), the way clu's `ReportProgress.timed()` does for its logged
steps/s.

  bar = TrainingBar(total=1000, initial=0)
  with bar.paused():
    state, metrics = compiling_first_step(state, batch)
  bar.update(1)
"""
from __future__ import annotations

import contextlib

import tqdm


class TrainingBar(tqdm.tqdm):
  """A tqdm bar whose clock stops inside `paused()`."""

  @contextlib.contextmanager
  def paused(self):
    """Time spent in the block is not counted as training time."""
    if self.disable:  # a disabled bar has no clock
      yield
      return
    start = self._time()
    try:
      yield
    finally:
      spent = self._time() - start
      # Shifting both marks removes the stretch from the elapsed time and
      # from the interval of the next rate sample (tqdm's unpause() would
      # drop everything since the last *print*, losing unprinted steps).
      self.start_t += spent
      self.last_print_t += spent
