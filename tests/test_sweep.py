"""Sweeps: declaration helpers, loading sweep files, naming, host split, runner.

The runner tests use a fake `python` (a shell script) that records its
arguments, so skipping, failing and resuming are checked in milliseconds; a
real two-member sweep runs in tests/test_sweep_end_to_end.py.
"""
import doctest
import importlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from itr_jax import sweeps
from itr_jax.sweeps import hyper
from itr_jax.sweeps import members as members_lib

REPO = os.path.join(os.path.dirname(__file__), "..")


# --- hyper -----------------------------------------------------------------

def test_product_first_list_varies_slowest():
  got = hyper.product([hyper.sweep("a", [1, 2]), hyper.sweep("b", ["x", "y", "z"])])
  assert got == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
                 {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]


def test_zipit_fixed_chain_and_config_prefix():
  assert hyper.zipit([hyper.sweep("config.a", [1, 2]), hyper.sweep("b", [3, 4])]) == [
      {"a": 1, "b": 3}, {"a": 2, "b": 4}]
  grid = hyper.product([hyper.fixed("c", 0.5), hyper.sweep("a", [1, 2])])
  assert grid == [{"c": 0.5, "a": 1}, {"c": 0.5, "a": 2}]
  assert hyper.chain([grid, hyper.fixed("a", 9)]) == grid + [{"a": 9}]


def test_hyper_errors():
  with pytest.raises(ValueError, match="equal length"):
    hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [1])])
  with pytest.raises(ValueError, match="more than one"):
    hyper.product([hyper.sweep("a", [1]), hyper.sweep("a", [2])])
  with pytest.raises(ValueError, match="empty"):
    hyper.sweep("a", [])
  with pytest.raises(ValueError, match="dotted config field"):
    hyper.sweep("", [1])


def test_seeds():
  assert hyper.seeds(None) == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
  assert hyper.seeds("1") == [{"seed": 0}]
  with pytest.raises(ValueError, match="seeds"):
    hyper.seeds("0")


# --- names, hosts ----------------------------------------------------------

def test_member_names_are_sorted_safe_and_unique():
  assert sweeps.member_name({"seed": 1, "loss.weight": 0.5}) == "loss.weight=0.5,seed=1"
  assert sweeps.member_name({"loss.tau": 1e-3}) == "loss.tau=0.001"
  assert sweeps.member_name({"data.data_dir": "a/b c"}) == "data.data_dir=a_b_c"
  members = sweeps.expand("/s", [{"a": 1}, {"a": 2}])
  assert [m.workdir for m in members] == ["/s/a=1", "/s/a=2"]
  with pytest.raises(ValueError, match="identical"):
    sweeps.expand("/s", [{"a": 1}, {"a": 1}])


def test_hosts_partition_the_members():
  members = sweeps.expand("/s", hyper.sweep("seed", range(7)))
  shares = [sweeps.for_host(members, i, 3) for i in range(3)]
  assert [len(s) for s in shares] == [3, 2, 2]
  assert sorted(m.index for s in shares for m in s) == list(range(7))
  with pytest.raises(ValueError, match="host_index"):
    sweeps.for_host(members, 3, 3)


# --- loading sweep files ---------------------------------------------------

def _write(path, text):
  path.write_text(textwrap.dedent(text))
  return str(path)


BASE = """
import ml_collections
def get_config(arg=None):
  return ml_collections.ConfigDict({"seed": 0, "loss": {"tau": 0.01, "name": "a"},
                                    "train": {"on": False}})
"""


def test_load_get_sweep_and_get_hyper_with_arg(tmp_path):
  path = _write(tmp_path / "s.py", BASE + """
def get_hyper(h, arg=None):
  return h.product([h.sweep("config.loss.tau", [0.1, 0.2]), h.seeds(arg)])
""")
  decl = sweeps.load(path + ":2")
  assert decl.config_flag == path + ":2"
  assert decl.members == [{"loss.tau": 0.1, "seed": 0}, {"loss.tau": 0.1, "seed": 1},
                          {"loss.tau": 0.2, "seed": 0}, {"loss.tau": 0.2, "seed": 1}]
  path2 = _write(tmp_path / "t.py", BASE + """
def get_sweep():
  return [{"loss.name": "b"}]
""")
  assert sweeps.load(path2).members == [{"loss.name": "b"}]


@pytest.mark.parametrize("sweep, match", [
    ('[{"loss.taux": 1.0}]', "no field 'taux'"),
    ('[{"los.tau": 1.0}]', "no section 'los'"),
    ('[{"seed": 0.5}]', "cannot be casted"),
    ('[]', "no members"),
])
def test_load_rejects_bad_members(tmp_path, sweep, match):
  path = _write(tmp_path / "s.py", BASE + f"\ndef get_sweep():\n  return {sweep}\n")
  with pytest.raises(ValueError, match=match):
    sweeps.load(path)


def test_load_needs_a_sweep_function(tmp_path):
  with pytest.raises(ValueError, match="declares no sweep"):
    sweeps.load(_write(tmp_path / "s.py", BASE))
  with pytest.raises(ValueError, match="does not exist"):
    sweeps.load(str(tmp_path / "missing.py"))


def test_apply_overrides_copies():
  base = ml_collections.ConfigDict({"loss": {"tau": 0.01}})
  new = sweeps.apply_overrides(base, {"loss.tau": 0.1})
  assert (new.loss.tau, base.loss.tau) == (0.1, 0.01)


def test_parse_assignments():
  assert sweeps.parse_assignments(["a.b=2", "c=gpo", "d=1e-3", "e=True", "f=a=b"]) == {
      "a.b": 2, "c": "gpo", "d": 0.001, "e": True, "f": "a=b"}
  with pytest.raises(ValueError, match="field=value"):
    sweeps.parse_assignments(["novalue"])


def test_train_command_round_trips_through_config_flags(tmp_path, monkeypatch):
  """The member's flags, parsed as itr_jax.train parses them, give its config."""
  path = _write(tmp_path / "s.py", BASE + "\ndef get_sweep():\n  return []\n")
  overrides = {"loss.tau": 0.001, "loss.name": "transpose", "train.on": True, "seed": 3}
  member = sweeps.expand(str(tmp_path), [overrides])[0]
  cmd = members_lib.train_command(path, member, {"loss.tau": 0.5}, python="py")
  assert cmd[:3] == ["py", "-m", "itr_jax.train"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values)
  flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
  argv = ["prog"] + cmd[3:]
  monkeypatch.setattr("sys.argv", argv)  # config_flags reads overrides from sys.argv
  flag_values(argv)
  config = flag_values.config
  assert (config.loss.tau, config.loss.name, config.train.on, config.seed) == (
      0.001, "transpose", True, 3)  # member overrides win over common ones
  assert flag_values.workdir == member.workdir


def test_ablation_configs_load():
  names = sorted(f for f in os.listdir(os.path.join(REPO, "configs", "ablations"))
                 if f.endswith(".py"))
  assert "loss_terms.py" in names and "tau.py" in names
  from itr_jax.training import defaults  # pylint: disable=import-outside-toplevel
  has_pairwise = "pairwise" in defaults.base_config().loss
  for name in names:
    path = os.path.join(REPO, "configs", "ablations", name) + ":1"
    if name == "pairwise_pixels.py" and not has_pairwise:
      with pytest.raises(ValueError, match="loss.pairwise"):
        sweeps.load(path)
      continue
    decl = sweeps.load(path)
    assert decl.members and all("seed" in m for m in decl.members), name
  decl = sweeps.load(os.path.join(REPO, "configs", "ablations", "loss_terms.py"))
  assert [m["loss.weight"] for m in decl.members] == [0.0] * 3 + [0.5] * 3 + [1.0] * 3


# --- runner (fake python) --------------------------------------------------

FAKE_PYTHON = """#!/bin/sh
# Records its arguments; fails when the workdir name contains "fail", runs
# for a minute when it contains "slow".
for a in "$@"; do case "$a" in --workdir=*) w="${a#--workdir=}";; esac; done
echo "$*" >> "$w/calls.txt"
case "$w" in *fail*) exit 3;; *slow*) exec sleep 60;; esac
"""


@pytest.fixture
def fake_python(tmp_path):
  path = tmp_path / "python"
  path.write_text(FAKE_PYTHON)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return str(path)


def _calls(member):
  with open(os.path.join(member.workdir, "calls.txt")) as f:
    return f.read().splitlines()


def test_runner_marks_done_skips_and_survives_failures(tmp_path, fake_python):
  members = sweeps.expand(str(tmp_path / "sw"), [{"a": 1}, {"a": "fail"}, {"a": 3}])
  seen, started = [], []
  outcomes = sweeps.run_members(members, "cfg.py", {"b": 2}, parallel=2,
                                python=fake_python, on_outcome=seen.append,
                                on_start=started.append)
  assert sorted(m.name for m in started) == sorted(m.name for m in members)
  assert [o.status for o in outcomes] == ["done", "failed", "done"]
  assert sorted(o.member.name for o in seen) == sorted(m.name for m in members)
  assert "train exited with status 3" in outcomes[1].message
  ok = members[0]
  assert ok.done and not members[1].done
  calls = _calls(ok)
  assert len(calls) == 2
  assert "-m itr_jax.train --config=cfg.py" in calls[0] and "--config.b=2 --config.a=1" in calls[0]
  assert "-m itr_jax.evaluate --workdir=" in calls[1]
  with open(os.path.join(ok.workdir, sweeps.DONE_FILE)) as f:
    assert set(json.load(f)) == {"finished_at", "train_seconds", "evaluate_seconds"}
  assert os.path.exists(os.path.join(ok.workdir, "sweep.log"))

  # Again: finished members are skipped, the failed one is retried.
  started = []
  again = sweeps.run_members(members, "cfg.py", python=fake_python, on_start=started.append)
  assert [o.status for o in again] == ["skipped", "failed", "skipped"]
  assert [m.name for m in started] == [members[1].name]
  assert len(_calls(ok)) == 2
  assert len(_calls(members[1])) == 2  # two train attempts, no evaluate


def test_runner_without_evaluation(tmp_path, fake_python):
  member = sweeps.expand(str(tmp_path), [{"a": 1}])[0]
  assert sweeps.run_member(member, "cfg.py", {}, evaluate=False,
                           python=fake_python).status == "done"
  assert len(_calls(member)) == 1
  with pytest.raises(ValueError, match="parallel"):
    sweeps.run_members([member], "cfg.py", parallel=0)


def test_stop_all_signals_running_members_and_starts_no_more(tmp_path, fake_python):
  members = sweeps.expand(str(tmp_path), [{"a": "slow1"}, {"a": "slow2"}, {"a": 3}])
  timer = threading.Timer(1.0, sweeps.stop_all)
  timer.start()
  t0 = time.time()
  outcomes = sweeps.run_members(members, "cfg.py", parallel=2, python=fake_python)
  timer.join()
  assert time.time() - t0 < 30  # the sleeping members were terminated
  assert [o.status for o in outcomes] == ["stopped"] * 3
  assert "resume" in outcomes[0].message
  assert not os.path.exists(members[2].workdir)  # never started
  assert not any(m.done for m in members)
  # A later run starts afresh (the stop is over).
  later = sweeps.expand(str(tmp_path), [{"a": 4}])
  assert sweeps.run_members(later, "cfg.py", python=fake_python)[0].status == "done"


def test_manifest_round_trip(tmp_path):
  members = sweeps.expand(str(tmp_path), [{"a": 1}, {"a": 2}])
  sweeps.write_manifest(str(tmp_path), "cfg.py:1", {"b": 2}, members)
  manifest = sweeps.read_manifest(str(tmp_path))
  assert manifest == {"config": "cfg.py:1", "common_overrides": {"b": 2},
                      "members": [{"name": "a=1", "overrides": {"a": 1}},
                                  {"name": "a=2", "overrides": {"a": 2}}]}
  assert sweeps.read_manifest(str(tmp_path / "nothing")) is None
  sweeps.write_manifest(str(tmp_path), "cfg.py:1", {"b": 2}, members)  # a resume: same


def test_a_finished_sweep_is_not_rerecorded_with_other_settings(tmp_path):
  """Its members would be skipped as done and the report would show settings they
  never ran with."""
  members = sweeps.expand(str(tmp_path), [{"a": 1}])
  sweeps.write_manifest(str(tmp_path), "cfg.py:1", {"b": 2}, members)
  before = open(tmp_path / "sweep.json").read()
  for config_flag, common in (("cfg.py:1", {"b": 3}), ("cfg.py:2", {"b": 2})):
    with pytest.raises(ValueError, match=r"holds a sweep run with other settings .*recorded"):
      sweeps.write_manifest(str(tmp_path), config_flag, common, members)
  assert open(tmp_path / "sweep.json").read() == before


@pytest.mark.parametrize("name", ["hyper", "declaration", "members"])
def test_docstring_examples(name):
  module = importlib.import_module(f"itr_jax.sweeps.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0, name


def test_cli_config_overrides_apply_to_every_member(tmp_path):
  """`--config.x=y` works like --set (and the sweep file may take an arg)."""
  out = subprocess.run(
      [sys.executable, "-m", "itr_jax.sweep", "--config=configs/ablations/tau.py:2",
       f"--sweep_dir={tmp_path}", "--dry_run", "--config.train.num_epochs=1",
       "--set=eval.batch_size=64"],
      cwd=os.path.join(os.path.dirname(__file__), ".."), capture_output=True, text=True,
      check=False, env={**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..")})
  assert out.returncode == 0, out.stderr[-2000:]
  commands = [l for l in out.stdout.splitlines() if "-m itr_jax.train" in l]
  assert len(commands) == 10  # 5 values of tau x 2 seeds
  for command in commands:
    assert "--config=configs/ablations/tau.py:2" in command
    assert "--config.train.num_epochs=1" in command and "--config.eval.batch_size=64" in command
