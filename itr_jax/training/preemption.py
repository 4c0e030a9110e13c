"""Stop cleanly on preemption: finish the current step, checkpoint, exit.

TPU VMs and SLURM announce preemption with SIGTERM. In a single process the
watcher turns SIGTERM, and Ctrl-C (SIGINT), into a flag the train loop polls
after every step; a second Ctrl-C exits at once (the last checkpoint stays). With
several processes JAX's own preemption service (started by
`jax.distributed.initialize`) catches the signal and agrees with all hosts on
a common step to stop at, so that every host saves the same checkpoint.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatcher:
  """Polled by the train loop: `should_stop(step)` is True once preempted."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self._requested = threading.Event()
    self._previous = {}
    self._interrupted = False
    self._multihost = jax.process_count() > 1
    if not self._multihost and threading.current_thread() is threading.main_thread():
      for sig in signals:
        self._previous[sig] = signal.signal(sig, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      if self._interrupted:
        sys.stderr.write("\nSecond interrupt: exiting now, without a new "
                         "checkpoint; the earlier ones are kept.\n")
        sys.stderr.flush()
        # At once: no cleanup that could block on input or device threads.
        os._exit(128 + signum)
      self._interrupted = True
      sys.stderr.write("\nInterrupted: saving a checkpoint after this step, "
                       "then exiting (press Ctrl-C again to exit at once).\n")
      sys.stderr.flush()
    self._requested.set()

  def request_stop(self) -> None:
    """What a SIGTERM does; also useful in tests and notebooks."""
    self._requested.set()

  def should_stop(self, step: int) -> bool:
    if self._requested.is_set():
      return True
    if self._multihost:
      return multihost_utils.reached_preemption_sync_point(step)
    return False

  def close(self) -> None:
    """Restores the signal handlers that were there before."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}
