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
  # Unreadable (half-written, binary, not a record, no or a bad pid): held while it
  # may be a trainer's lock being written, stale after the stale window.
  for text in ('{"host": ', "\x00\xff\xfe", "[]", '{"host": "%s"}' % me,
               '{"host": "%s", "pid": 0}' % me):
    with open(path, "w") as f:
      f.write(text)
    assert workdir_lib.lock_holder(workdir)["unreadable"]
    with pytest.raises(workdir_lib.WorkdirLockedError, match="cannot be read"):
      workdir_lib.WorkdirLock(workdir).acquire()
    os.utime(path, (old, old))
    assert workdir_lib.lock_holder(workdir) is None


def test_fresh_start_keeps_the_lock_in_place(tmp_path):
  workdir = str(tmp_path)
  with workdir_lib.WorkdirLock(workdir):
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write("{}")
    workdir_lib._move_aside(workdir)  # pylint: disable=protected-access
    assert os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))


def test_take_over_has_one_winner_under_forced_interleavings(tmp_path, monkeypatch):
  """A and B both judge the same lock stale; A takes it over first. B then must
  not remove A's new lock (it did: both held the workdir)."""
  workdir = str(tmp_path)
  path = _write_lock(workdir, host=socket.gethostname(), pid=2**22 + 12345)  # no such pid
  a, b = workdir_lib.WorkdirLock(workdir), workdir_lib.WorkdirLock(workdir)
  real = workdir_lib.lock_holder
  calls = []

  def b_judges_then_a_runs(wd):
    result = real(wd)
    if not calls:  # B's first look: stale; now A runs its whole take-over
      calls.append(result)
      monkeypatch.setattr(workdir_lib, "lock_holder", real)
      a.acquire()
    return result

  monkeypatch.setattr(workdir_lib, "lock_holder", b_judges_then_a_runs)
  with pytest.raises(workdir_lib.WorkdirLockedError, match="in use by another trainer"):
    b.acquire()
  assert calls == [None] and a._still_mine() and not b._held  # pylint: disable=protected-access
  # B inside its take-over while A holds the take-over mutex: B changes nothing.
  a.release()
  path = _write_lock(workdir, host=socket.gethostname(), pid=2**22 + 12345)
  mutex = path + ".takeover"
  with open(mutex, "w") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)  # live: A's
  b._take_over_stale()  # pylint: disable=protected-access
  assert json.load(open(path))["pid"] == 2**22 + 12345 and os.path.exists(mutex)
  # The mutex of a taker killed mid-take-over is itself stale: removed, then B wins.
  with open(mutex, "w") as f:
    json.dump({"host": socket.gethostname(), "pid": 2**22 + 12345}, f)
  with open(os.path.join(workdir, "LOCK.stale-999"), "w") as f:
    f.write("left by an older itr_jax")
  b.acquire()
  assert b._still_mine() and not os.path.exists(mutex)  # pylint: disable=protected-access
  assert not [n for n in os.listdir(workdir) if n.startswith("LOCK.")]  # leftovers cleaned
  b.release()


def test_heartbeat_retries_blips_and_stops_the_trainer_when_it_cannot_renew(
    tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lib, "HEARTBEAT_SECONDS", 0.02)
  monkeypatch.setattr(workdir_lib, "STALE_AFTER_SECONDS", 0.3)
  real_utime, failures = os.utime, []

  def flaky_utime(path, *args):
    if failures and failures[0] > 0:
      failures[0] -= 1
      raise OSError(5, "Input/output error")
    return real_utime(path, *args)

  monkeypatch.setattr(workdir_lib.os, "utime", flaky_utime)
  lock = workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  try:
    failures.append(3)  # a blip: three failed renewals, then fine (it stopped for good)
    deadline = time.time() + 5
    while failures[0] and time.time() < deadline:
      time.sleep(0.01)
    time.sleep(0.1)
    lock.check()  # still held
    failures[0] = 10**9  # the storage is gone
    deadline = time.time() + 5
    while lock.lost is None and time.time() < deadline:
      time.sleep(0.02)
    with pytest.raises(workdir_lib.WorkdirLockedError,
                       match=r"Stopped: the lock .* could not be renewed for"):
      lock.check()
  finally:
    failures[0] = 0
    lock.release()


def test_a_trainer_whose_lock_was_replaced_stops(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lib, "HEARTBEAT_SECONDS", 0.02)
  lock = workdir_lib.WorkdirLock(str(tmp_path)).acquire()
  _write_lock(str(tmp_path), host="elsewhere", pid=7)  # another host took it over
  deadline = time.time() + 5
  while lock.lost is None and time.time() < deadline:
    time.sleep(0.02)
  with pytest.raises(workdir_lib.WorkdirLockedError, match="replaced or removed"):
    lock.check()
  lock.release()
  assert json.load(open(os.path.join(tmp_path, "LOCK")))["host"] == "elsewhere"  # not removed


def test_concurrent_take_overs_of_a_stale_lock_have_one_winner(tmp_path):
  """Random interleavings: threads, each with its own lock object, race for the
  same stale lock (20 rounds); exactly one holds it each time."""
  import threading  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path)
  for _ in range(20):
    _write_lock(workdir, host=socket.gethostname(), pid=2**22 + 12345)
    locks = [workdir_lib.WorkdirLock(workdir) for _ in range(6)]
    start = threading.Barrier(len(locks))

    def take(lock):
      start.wait()
      try:
        lock.acquire()
      except workdir_lib.WorkdirLockedError:
        pass

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    holders = [lock for lock in locks if lock._held]  # pylint: disable=protected-access
    assert len(holders) == 1 and holders[0]._still_mine()  # pylint: disable=protected-access
    holders[0].release()


def test_write_new_renames_a_complete_copy_and_clears_dead_writers_leftovers(tmp_path):
  """A new workdir appears whole or not at all; a killed writer's staging copy
  (this host, process gone) is removed by the next write, a live writer's and
  another host's are kept."""
  workdir = str(tmp_path / "run")
  prefix = f"{workdir}{workdir_lib.STAGING_INFIX}{socket.gethostname()}-"
  dead = subprocess.Popen(["true"])
  dead.wait()
  leftovers = {"dead": f"{prefix}{dead.pid}", "live": f"{prefix}{os.getppid()}",
               "other host": f"{workdir}{workdir_lib.STAGING_INFIX}elsewhere-{dead.pid}"}
  for path in leftovers.values():
    os.makedirs(path)

  def write(staging):
    assert staging.startswith(prefix) and not os.path.exists(staging)
    os.makedirs(staging)
    with open(os.path.join(staging, "x"), "w") as f:
      f.write("done")

  workdir_lib.write_new(workdir, write)
  with open(os.path.join(workdir, "x")) as f:
    assert f.read() == "done"
  assert not os.path.exists(leftovers["dead"])
  assert os.path.isdir(leftovers["live"]) and os.path.isdir(leftovers["other host"])
  with pytest.raises(ValueError, match="was filled by something else"):
    workdir_lib.write_new(workdir, write)  # a workdir filled meanwhile is kept
  assert os.listdir(workdir) == ["x"] and not os.path.exists(f"{prefix}{os.getpid()}")
