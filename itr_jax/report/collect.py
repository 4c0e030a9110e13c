"""Gathers the runs of a sweep directory: overrides, metric history, results.

A run is any sub-directory holding a `config.json` (written by
`itr_jax.train`). Its swept values come from the sweep's `sweep.json` when
there is one, otherwise from the config fields that differ between runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from itr_jax import filesystem as fs
from itr_jax.sweeps import members as members_lib
from itr_jax.training import reporting
from itr_jax.training import workdir as workdir_lib


@dataclasses.dataclass
class Run:
  name: str
  workdir: str
  overrides: dict[str, Any]
  records: list[dict]  # metrics.jsonl
  test: dict[str, float] | None  # eval_test.json, the split's main protocol
  done: bool

  @property
  def dev(self) -> list[dict]:
    return [r for r in self.records if r["kind"] == "dev"]

  @property
  def train(self) -> list[dict]:
    return [r for r in self.records if r["kind"] == "train"]

  @property
  def best_dev(self) -> dict | None:
    """The dev record with the highest RSUM (what the best checkpoint holds)."""
    dev = [r for r in self.dev if isinstance(r.get("rsum"), (int, float))]
    return max(dev, key=lambda r: r["rsum"]) if dev else None

  @property
  def final_dev(self) -> dict | None:
    return self.dev[-1] if self.dev else None


def read_test(workdir: str, split: str = "test") -> dict[str, float] | None:
  """Metrics of eval_<split>.json: the 'full' protocol, else COCO's 5K."""
  path = fs.join(workdir, f"eval_{split}.json")
  if not fs.exists(path):
    return None
  with fs.open(path) as f:
    report = json.load(f)
  for protocol in ("full", "coco_5k"):
    if protocol in report:
      return report[protocol]
  return None


def varying_fields(configs: dict[str, dict]) -> list[str]:
  """Dotted config fields whose values differ between the runs."""
  flat = {name: workdir_lib.flatten(c) for name, c in configs.items()}
  keys = sorted(set().union(*flat.values())) if flat else []
  return [k for k in keys
          if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1]


def collect_runs(sweep_dir: str) -> list[Run]:
  """Every run under `sweep_dir`, in sweep order (else by name)."""
  if not fs.isdir(sweep_dir):
    raise ValueError(f"sweep_dir {sweep_dir!r} is not a directory; pass the "
                     "--sweep_dir given to `python -m itr_jax.sweep`")
  names = sorted(n for n in fs.listdir(sweep_dir)
                 if fs.exists(fs.join(sweep_dir, n, workdir_lib.CONFIG_FILE)))
  manifest = members_lib.read_manifest(sweep_dir)
  declared = {m["name"]: m["overrides"] for m in (manifest or {}).get("members", [])}
  if declared:
    order = {name: i for i, name in enumerate(declared)}
    names.sort(key=lambda n: order.get(n, len(order)))
  configs = {}
  for n in names:
    with fs.open(fs.join(sweep_dir, n, workdir_lib.CONFIG_FILE)) as f:
      configs[n] = json.load(f)
  fields = varying_fields(configs)
  # A member names only the fields it changes; the others have its config's
  # value (not None), so every run has every declared field.
  declared_fields = list(dict.fromkeys(k for o in declared.values() for k in o))
  runs = []
  for n in names:
    workdir = fs.join(sweep_dir, n)
    if n in declared:
      flat = workdir_lib.flatten(configs[n])
      overrides = {k: declared[n][k] if k in declared[n] else flat.get(k)
                   for k in declared_fields}
    else:
      flat = workdir_lib.flatten(configs[n])
      overrides = {k: flat.get(k) for k in fields}
    runs.append(Run(n, workdir, overrides, reporting.read_metrics(workdir),
                    read_test(workdir),
                    fs.exists(fs.join(workdir, members_lib.DONE_FILE))))
  return runs
