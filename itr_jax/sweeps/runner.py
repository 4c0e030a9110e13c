"""Runs sweep members as subprocesses: one after another or N at a time.

Each member is `python -m itr_jax.train` (which resumes from the member's
latest checkpoint by itself) followed by `python -m itr_jax.evaluate` on the
test split; both append to `<workdir>/sweep.log`. On success the member's
workdir gets a `DONE` marker and later invocations skip it. A failing member
does not stop the others; `run_members` returns every member's outcome.

`stop_all()` (the sweep CLI calls it on SIGTERM/SIGINT) starts no further
member and sends SIGTERM to the running trainers, which save a checkpoint
and exit; the next invocation resumes them.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Mapping, Sequence

from itr_jax import filesystem as fs
from itr_jax.sweeps import members as members_lib

LOG_FILE = "sweep.log"


@dataclasses.dataclass(frozen=True)
class Outcome:
  member: members_lib.Member
  status: str  # "skipped" (already DONE), "done", "failed" or "stopped"
  seconds: float = 0.0
  message: str = ""


class _Running:
  """The member subprocesses of this process, and whether to start more."""
  lock = threading.Lock()
  procs: set = set()
  stop = threading.Event()


def stop_all(sig: int = signal.SIGTERM) -> None:
  """Starts no further member; sends `sig` to every running member process."""
  _Running.stop.set()
  with _Running.lock:
    for proc in _Running.procs:
      proc.send_signal(sig)


def _run_logged(cmd: Sequence[str], log_path: str, env) -> int | None:
  """The command's exit status, or None if stop_all() came first."""
  if fs.is_remote(log_path):
    # A subprocess needs a local file for its output: the object gets it
    # appended when the command ends.
    with tempfile.TemporaryDirectory() as tmp:
      local = os.path.join(tmp, LOG_FILE)
      try:
        return _run_logged(cmd, local, env)
      finally:
        with open(local, encoding="utf-8") as f, fs.open(log_path, "a") as out:
          out.write(f.read())
  with open(log_path, "a") as log:
    log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n")
    log.flush()
    with _Running.lock:
      if _Running.stop.is_set():
        return None
      # Own session: a terminal's Ctrl-C reaches only the sweep, which turns
      # it into the SIGTERM the trainer answers with a checkpoint.
      proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)
      _Running.procs.add(proc)
    try:
      return proc.wait()
    finally:
      with _Running.lock:
        _Running.procs.discard(proc)


def run_member(member: members_lib.Member, config_flag: str,
               common: Mapping[str, object], *, evaluate: bool = True,
               python: str = sys.executable, env: Mapping[str, str] | None = None,
               ) -> Outcome:
  """Trains (resuming if interrupted) and evaluates one member, unless DONE."""
  if member.done:
    return Outcome(member, "skipped")
  if _Running.stop.is_set():
    return Outcome(member, "stopped")
  fs.makedirs(member.workdir)
  log = fs.join(member.workdir, LOG_FILE)
  env = dict(os.environ if env is None else env)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  t0 = time.time()
  steps = [("train", members_lib.train_command(config_flag, member, common, python))]
  if evaluate:
    steps.append(("evaluate", members_lib.eval_command(member, python)))
  info = {}
  for what, cmd in steps:
    t = time.time()
    code = _run_logged(cmd, log, env)
    if code is None or _Running.stop.is_set():
      return Outcome(member, "stopped", time.time() - t0,
                     f"stopped during {what}; run the sweep again to resume")
    if code != 0:
      return Outcome(member, "failed", time.time() - t0,
                     f"{what} exited with status {code}; see {log}")
    info[f"{what}_seconds"] = round(time.time() - t, 1)
  members_lib.mark_done(member, info)
  return Outcome(member, "done", time.time() - t0)


def run_members(members: Sequence[members_lib.Member], config_flag: str,
                common: Mapping[str, object] | None = None, *, parallel: int = 1,
                evaluate: bool = True, python: str = sys.executable,
                env: Mapping[str, str] | None = None,
                on_outcome: Callable[[Outcome], None] | None = None,
                on_start: Callable[[members_lib.Member], None] | None = None,
                ) -> list[Outcome]:
  """Runs `members` with at most `parallel` at once; outcomes in member order.

  `on_start(member)` is called when a member that is not done starts.
  """
  if parallel < 1:
    raise ValueError(f"parallel must be >= 1 (members run at once), got {parallel}")
  common = dict(common or {})
  lock = threading.Lock()
  _Running.stop.clear()  # a new run of members: an earlier stop_all() is over

  def one(member):
    if on_start is not None and not member.done and not _Running.stop.is_set():
      with lock:
        on_start(member)
    outcome = run_member(member, config_flag, common, evaluate=evaluate,
                         python=python, env=env)
    if on_outcome is not None:
      with lock:
        on_outcome(outcome)
    return outcome

  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    return list(pool.map(one, members))
