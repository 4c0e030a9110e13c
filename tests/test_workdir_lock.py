"""One trainer per workdir: the lock names its holder, stale locks are taken over.

The holder is a real process (`python -c ...`), killed with SIGKILL to leave
a stale lock behind, as a crashed or preempted trainer would.
"""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from itr_jax.training import workdir as workdir_lib

_HOLD = ("import sys, time\n"
         "from itr_jax.training import workdir\n"
         "workdir.WorkdirLock(sys.argv[1]).acquire()\n"
         "print('held', flush=True)\n"
         "time.sleep(600)\n")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hold(workdir):
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, workdir], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_holder_is_refused_then_a_killed_holders_lock_is_taken_over(
    tmp_path, caplog):
  workdir = str(tmp_path / "run")
  holder = _hold(workdir)
  try:
    with pytest.raises(workdir_lib.WorkdirLockedError,
                       match=rf"in use by another trainer \(host "
                             rf"{socket.gethostname()}, pid {holder.pid}, started "):
      workdir_lib.WorkdirLock(workdir).acquire()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))  # left behind
  with caplog.at_level(logging.WARNING):
    with workdir_lib.WorkdirLock(workdir):
      assert "Took over the stale lock" in caplog.text
      with open(os.path.join(workdir, workdir_lib.LOCK_FILE)) as f:
        assert json.load(f)["pid"] == os.getpid()
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))


def _write_lock(workdir, **record):
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, workdir_lib.LOCK_FILE)
  with open(path, "w") as f:
    json.dump(record, f)
  return path


def test_staleness_reused_pid_and_other_hosts_heartbeat(tmp_path):
  workdir = str(tmp_path)
  me = socket.gethostname()
  ticks = workdir_lib._process_start_ticks(os.getpid())  # pylint: disable=protected-access
  _write_lock(workdir, host=me, pid=os.getpid(), pid_start_ticks=ticks)
  assert workdir_lib.lock_holder(workdir)["pid"] == os.getpid()
  # Same pid, another start time: the pid was reused by an unrelated process.
  _write_lock(workdir, host=me, pid=os.getpid(), pid_start_ticks=ticks + 1)
  assert workdir_lib.lock_holder(workdir) is None
  # Another host: alive while its heartbeat (the mtime) is recent.
  path = _write_lock(workdir, host="elsewhere", pid=1)
  assert workdir_lib.lock_holder(workdir)["host"] == "elsewhere"
  old = time.time() - workdir_lib.STALE_AFTER_SECONDS - 1
  os.utime(path, (old, old))
  assert workdir_lib.lock_holder(workdir) is None
  # Unreadable (a lock half-written by a killed process): stale.
  with open(path, "w") as f:
    f.write('{"host": ')
  assert workdir_lib.lock_holder(workdir) is None


def test_fresh_start_keeps_the_lock_in_place(tmp_path):
  workdir = str(tmp_path)
  with workdir_lib.WorkdirLock(workdir):
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write("{}")
    workdir_lib._move_aside(workdir)  # pylint: disable=protected-access
    assert os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))
