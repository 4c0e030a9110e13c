"""The progress bar of every long loop (training, scoring, embedding, converting).

Its rate and ETA count the work alone: tqdm's count wall-clock time between
updates, so the first
step's compilation (seconds to minutes), dev evaluations and checkpoint writes
would all look like slow training and inflate the ETA. `ProgressBar.paused()`
takes such a stretch out of the bar's clock (its elapsed time and its
smoothed rate), the way clu's `ReportProgress.timed()` does for its logged
steps/s.

  bar = ProgressBar(total=1000, initial=0)
  with bar.paused():
    state, metrics = compiling_first_step(state, batch)
  bar.update(1)

Written to a file or pipe (SLURM logs, `| tee`), the bar prints a plain
line at most every `mininterval` seconds (default 30) instead of redrawing
itself with carriage returns and cursor codes.
"""
from __future__ import annotations

import contextlib
import sys

import tqdm


class ProgressBar(tqdm.tqdm):
  """A tqdm bar whose clock stops inside `paused()`; plain lines off a terminal."""

  def __init__(self, *args, **kwargs):
    out = kwargs.get("file") or sys.stderr
    self._plain = not (hasattr(out, "isatty") and out.isatty())
    self._plain_n = None  # the step count of the last plain line
    if self._plain:
      kwargs.setdefault("mininterval", 30.0)
      kwargs["dynamic_ncols"] = False
      kwargs.setdefault("ncols", 100)
    super().__init__(*args, **kwargs)
    if self._plain and not self.disable:  # a disabled bar has no file
      self.fp = _WholeLines(self.fp)

  def display(self, msg=None, pos=None):
    if not getattr(self, "_plain", False):
      return super().display(msg, pos)
    # A redraw without progress (after tqdm.write, at close) would repeat the
    # last line in a log; an empty message is tqdm clearing the bar.
    if msg is None and self.n == self._plain_n or msg == "":
      return True
    if msg is None:
      self._plain_n = self.n
    self.fp.write((self.__str__() if msg is None else msg) + "\n")
    self.fp.flush()
    return True

  def clear(self, nolock=False):
    if not getattr(self, "_plain", False):
      super().clear(nolock)

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


class _WholeLines:
  """A log file as the plain bar sees it: tqdm's bare line ends and carriage
  returns around its redraws are dropped, whole lines pass."""

  def __init__(self, fp):
    self._fp = fp

  def write(self, text: str) -> None:
    if text.strip("\r\n"):
      self._fp.write(text)

  def flush(self) -> None:
    self._fp.flush()
