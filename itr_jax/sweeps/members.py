"""Sweep members: names, workdirs, command lines and the DONE marker.

Each member gets its own workdir, named from its overrides so a directory
listing reads like the sweep: ``<sweep_dir>/loss.weight=0.5,seed=1``.
A member is finished when its workdir holds ``DONE`` (written by the runner
after training and, if asked, test evaluation succeeded); anything else is
run again, and the trainer resumes from the member's latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
import time
from typing import Any, Mapping, Sequence

from itr_jax import filesystem as fs

DONE_FILE = "DONE"
SWEEP_FILE = "sweep.json"
# Characters that stay in member names; everything else becomes '_'.
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+\-]")


def format_value(value: Any) -> str:
  """How a value is spelled on the command line (strings bare, else Python literal).

  >>> format_value(0.001), format_value("gpo"), format_value(True), format_value((1, 2))
  ('0.001', 'gpo', 'True', '(1, 2)')
  """
  return value if isinstance(value, str) else repr(value)


def member_name(overrides: Mapping[str, Any]) -> str:
  """'loss.weight=0.5,seed=1' for {'seed': 1, 'loss.weight': 0.5} (keys sorted).

  >>> member_name({"seed": 1, "loss.weight": 0.5})
  'loss.weight=0.5,seed=1'
  >>> member_name({})
  'base'
  """
  if not overrides:
    return "base"
  parts = [f"{k}={format_value(v)}" for k, v in sorted(overrides.items())]
  return ",".join(_UNSAFE.sub("_", p) for p in parts)


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep."""
  index: int
  name: str
  overrides: dict[str, Any]
  workdir: str

  @property
  def done(self) -> bool:
    return fs.exists(fs.join(self.workdir, DONE_FILE))


def expand(sweep_dir: str, overrides_list: Sequence[Mapping[str, Any]]) -> list[Member]:
  """Members with workdirs under `sweep_dir`; duplicate members raise."""
  members, seen = [], {}
  for i, overrides in enumerate(overrides_list):
    name = member_name(overrides)
    if name in seen:
      raise ValueError(f"sweep members {seen[name]} and {i} are identical "
                       f"({name}); remove the duplicate or add a distinguishing "
                       "field such as seed")
    seen[name] = i
    members.append(Member(i, name, dict(overrides), fs.join(sweep_dir, name)))
  return members


def for_host(members: Sequence[Member], host_index: int, num_hosts: int) -> list[Member]:
  """This host's share when each host runs every num_hosts-th member."""
  if num_hosts < 1 or not 0 <= host_index < num_hosts:
    raise ValueError(f"host_index must be in [0, num_hosts) and num_hosts >= 1, "
                     f"got host_index={host_index}, num_hosts={num_hosts}")
  return list(members[host_index::num_hosts])


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
  return [f"--config.{k}={format_value(v)}" for k, v in sorted(overrides.items())]


def train_command(config_flag: str, member: Member, common: Mapping[str, Any],
                  python: str = sys.executable) -> list[str]:
  """`python -m itr_jax.train ...` for `member` (common overrides first)."""
  return [python, "-m", "itr_jax.train", f"--config={config_flag}",
          f"--workdir={member.workdir}", *override_flags(common),
          *override_flags(member.overrides)]


def eval_command(member: Member, python: str = sys.executable) -> list[str]:
  return [python, "-m", "itr_jax.evaluate", f"--workdir={member.workdir}"]


def mark_done(member: Member, info: Mapping[str, Any]) -> None:
  fs.atomic_write_text(fs.join(member.workdir, DONE_FILE), json.dumps(
      {"finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), **info}, indent=2))


def check_manifest(sweep_dir: str, config_flag: str, common: Mapping[str, Any]) -> None:
  """Raises ValueError if `sweep_dir` records a sweep with another config or other
  common overrides: its finished members would be skipped, and rewriting
  sweep.json would make the report show settings they never ran with."""
  old = read_manifest(sweep_dir)
  if old is None:
    return
  new = json.loads(json.dumps({"config": config_flag, "common_overrides": dict(common)},
                              default=repr))
  changed = [k for k in ("config", "common_overrides") if old.get(k) != new[k]]
  if changed:
    what = "; ".join(f"{k}: recorded {old.get(k)!r}, now {new[k]!r}" for k in changed)
    raise ValueError(
        f"--sweep_dir {sweep_dir!r} holds a sweep run with other settings ({what}); its "
        "members would not be re-run with the new ones. Use another --sweep_dir, or the "
        "recorded settings to resume it.")


def write_manifest(sweep_dir: str, config_flag: str, common: Mapping[str, Any],
                   members: Sequence[Member]) -> str:
  """Records the sweep (config, common overrides, members) in sweep.json;
  refuses to change the recorded settings (`check_manifest`)."""
  check_manifest(sweep_dir, config_flag, common)
  fs.makedirs(sweep_dir)
  path = fs.join(sweep_dir, SWEEP_FILE)
  manifest = {"config": config_flag, "common_overrides": dict(common),
              "members": [{"name": m.name, "overrides": m.overrides} for m in members]}
  fs.atomic_write_text(path, json.dumps(manifest, indent=2, default=repr))
  return path


def read_manifest(sweep_dir: str) -> dict | None:
  path = fs.join(sweep_dir, SWEEP_FILE)
  if not fs.exists(path):
    return None
  try:
    return fs.read_json_object(path, 16 << 20, what="sweep record")
  except ValueError as e:
    raise ValueError(f"{e}; move it away to start the sweep afresh.") from e
