"""Gathers the runs of a sweep directory: overrides, metric history, results.

A run is any sub-directory holding a `config.json` (written by
`itr_jax.train` or an importer). Its swept values come from the sweep's `sweep.json` when
there is one, otherwise from the config fields that differ between runs.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from itr_jax import filesystem as fs
from itr_jax.sweeps import members as members_lib
from itr_jax.training import integrity
from itr_jax.training import reporting
from itr_jax.training import workdir as workdir_lib


MAX_REPORT_BYTES = 64 << 20  # an evaluation result is a few KB


@dataclasses.dataclass
class Run:
  name: str
  workdir: str
  overrides: dict[str, Any]
  records: list[dict]  # metrics.jsonl
  test: dict[str, float] | None  # eval_test.json, the split's main protocol
  done: bool  # finished: see run_status
  status: str = ""  # run_status's sentence

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
  try:
    report = fs.read_json(path, MAX_REPORT_BYTES, what="evaluation result")
  except ValueError as e:
    raise ValueError(f"{e}; evaluate the run again (itr-evaluate --workdir="
                     f"{workdir}) to rewrite it.") from e
  for protocol in ("full", "coco_5k"):
    if isinstance(report, dict) and isinstance(report.get(protocol), dict):
      return report[protocol]
  return None


def _imported_from(workdir: str) -> str | None:
  """The source an importer (itr-import-torch, itr-import-dual-encoder)
  recorded in the workdir's checkpoint, else None."""
  directory = fs.join(workdir, "checkpoints")
  if not fs.isdir(directory):
    return None
  for step in sorted((n for n in fs.listdir(directory) if n.isdigit()), key=int):
    try:  # a step without a readable record is skipped
      source = integrity.read_record(fs.join(directory, step))
      source = source.get("extra", {}).get("imported_from")
    except (integrity.IntegrityError, AttributeError):
      continue
    if source:
      return str(source)
  return None


def run_status(workdir: str, config: dict, records: list[dict]) -> tuple[bool, str]:
  """(finished, what the run is) of a workdir.

  Finished: a sweep member marked DONE; training that reached its last step
  (`train.num_epochs` epochs, or `train.max_steps`: the trainer logs the
  last step); or an imported checkpoint (a complete model, never trained
  here). A population-sweep member's status also says why it keeps no
  checkpoints.

  >>> records = [{"kind": "train", "step": 40, "epoch": 4.0}]
  >>> run_status("nowhere", {"train": {"num_epochs": 4}}, records)
  (True, 'finished: trained 40 of 40 steps')
  >>> run_status("nowhere", {"train": {"num_epochs": 8, "max_steps": 0}}, records)
  (False, 'unfinished: trained 40 of 80 steps')
  """
  no_checkpoints = workdir_lib.no_checkpoints_reason(workdir)
  note = f"; no checkpoints: {no_checkpoints}" if no_checkpoints else ""
  train = [r for r in records if r.get("kind") == "train" and r.get("epoch")]
  if not train:
    source = _imported_from(workdir)
    if source:
      return True, f"finished: imported from {source} (not trained here){note}"
  total = None
  if train:
    last = train[-1]
    steps_per_epoch = round(last["step"] / last["epoch"])
    total = steps_per_epoch * config.get("train", {}).get("num_epochs", 0)
    max_steps = config.get("train", {}).get("max_steps") or 0
    total = min(total, max_steps) if max_steps else total
  done = fs.exists(fs.join(workdir, members_lib.DONE_FILE)) or bool(
      train and train[-1]["step"] >= total)
  trained = (f"trained {train[-1]['step']} of {total} steps" if train else
             "marked DONE by itr-sweep" if done else "not trained yet")
  return done, f"{'finished' if done else 'unfinished'}: {trained}{note}"


def varying_fields(configs: dict[str, dict]) -> list[str]:
  """Dotted config fields whose values differ between the runs."""
  flat = {name: workdir_lib.flatten(c) for name, c in configs.items()}
  keys = sorted(set().union(*flat.values())) if flat else []
  return [k for k in keys
          if len({json.dumps(f.get(k), sort_keys=True) for f in flat.values()}) > 1]


def collect_runs(sweep_dir: str) -> list[Run]:
  """Every run under `sweep_dir`, in sweep order (else by name)."""
  if not fs.isdir(sweep_dir):
    raise ValueError(f"{sweep_dir!r} is not a directory; pass a sweep's --sweep_dir "
                     "or a folder holding runs' workdirs.")
  names = sorted(n for n in fs.listdir(sweep_dir)
                 if fs.exists(fs.join(sweep_dir, n, workdir_lib.CONFIG_FILE)))
  manifest = members_lib.read_manifest(sweep_dir)
  declared = {m["name"]: m["overrides"] for m in (manifest or {}).get("members", [])}
  if declared:
    order = {name: i for i, name in enumerate(declared)}
    names.sort(key=lambda n: order.get(n, len(order)))
  configs = {}
  for n in names:
    configs[n] = workdir_lib.read_config_json(fs.join(sweep_dir, n, workdir_lib.CONFIG_FILE))
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
    records = reporting.read_metrics(workdir)
    done, status = run_status(workdir, configs[n], records)
    runs.append(Run(n, workdir, overrides, records, read_test(workdir), done, status))
  return runs
