"""Runs sweep members as subprocesses: one after another or N at a time.

Each member is `python -m itr_jax.train` (which resumes from the member's
latest checkpoint by itself) followed by `python -m itr_jax.evaluate` on the
test split; both append to `<workdir>/sweep.log`. On success the member's
workdir gets a `DONE` marker and later invocations skip it. A failing member
does not stop the others; `run_members` returns every member's outcome.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Mapping, Sequence

from itr_jax.sweeps import members as members_lib

LOG_FILE = "sweep.log"


@dataclasses.dataclass(frozen=True)
class Outcome:
  member: members_lib.Member
  status: str  # "skipped" (already DONE), "done", or "failed"
  seconds: float = 0.0
  message: str = ""


def _run_logged(cmd: Sequence[str], log_path: str, env) -> int:
  with open(log_path, "a") as log:
    log.write(f"\n==> {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(cmd)}\n")
    log.flush()
    return subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT,
                          env=env, check=False).returncode


def run_member(member: members_lib.Member, config_flag: str,
               common: Mapping[str, object], *, evaluate: bool = True,
               python: str = sys.executable, env: Mapping[str, str] | None = None,
               ) -> Outcome:
  """Trains (resuming if interrupted) and evaluates one member, unless DONE."""
  if member.done:
    return Outcome(member, "skipped")
  os.makedirs(member.workdir, exist_ok=True)
  log = os.path.join(member.workdir, LOG_FILE)
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
                on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
  """Runs `members` with at most `parallel` at once; outcomes in member order."""
  if parallel < 1:
    raise ValueError(f"parallel must be >= 1 (members run at once), got {parallel}")
  common = dict(common or {})
  lock = threading.Lock()

  def one(member):
    outcome = run_member(member, config_flag, common, evaluate=evaluate,
                         python=python, env=env)
    if on_outcome is not None:
      with lock:
        on_outcome(outcome)
    return outcome

  with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
    return list(pool.map(one, members))
