"""A run's working directory: its resolved config, and refusing to mix runs.

A workdir belongs to one run. Restarting with the same config resumes it;
restarting with a config that changes what is trained (model, loss, data,
optimizer) is refused unless the user asks for a fresh start, in which case
the old run is moved aside, never deleted.
"""
from __future__ import annotations

import json
import os
import time

import jax
import ml_collections

from itr_jax.training import paths

CONFIG_FILE = "config.json"
# Fields that may change between restarts of the same run: they change how a
# run is observed or how long it goes on, not what it computes.
RESUMABLE_FIELDS = (
    "train.num_epochs", "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "eval.", "data.data_dir", "data.dev_max_images",
    "data.test_split",
    # Restoring re-places the state on the new mesh; the global batch, and so
    # the result (up to float rounding), does not depend on the device count.
    "mesh", "sharding.",
)


def flatten(tree: dict, prefix: str = "") -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}: config fields by dotted name."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"No {CONFIG_FILE} in {workdir!r}: is this a workdir written by "
        "`python -m itr_jax.train`?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def config_differences(old: dict, new: dict) -> list[str]:
  """Dotted names of fields that differ and would make resuming wrong."""
  old_flat, new_flat = flatten(old), flatten(new)
  # Fields the old run's config lacks were added to itr_jax since: not a
  # difference in what the run computes.
  keys = sorted(set(old_flat))
  return [k for k in keys
          if old_flat.get(k) != new_flat.get(k)
          and not any(k == f or (f.endswith(".") and k.startswith(f))
                      for f in RESUMABLE_FIELDS)]


def check(workdir: str, config: ml_collections.ConfigDict, *,
          fresh: bool = False) -> None:
  """Raises ValueError if `workdir` holds a run `config` cannot resume.

  Writes nothing. With `fresh`, any earlier run is acceptable (it will be
  moved aside by `prepare`).
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if fresh or not os.path.exists(path):
    return
  with open(path) as f:
    old = json.load(f)
  # Runs recorded before paths were stored absolute resume from where they
  # started: read their relative paths against the current directory.
  paths.resolve_config_paths(old)
  new = json.loads(config.to_json())
  diffs = config_differences(old, new)
  if diffs:
    details = ", ".join(
        f"{k}: {flatten(old).get(k)!r} -> {flatten(new).get(k)!r}" for k in diffs)
    raise ValueError(
        f"Workdir {workdir!r} holds a run with a different config ({details}). "
        "Use another --workdir, or pass --fresh to move that run aside "
        "(it is kept under previous_runs/) and start over.")


def prepare(workdir: str, config: ml_collections.ConfigDict, *,
            fresh: bool = False) -> None:
  """Checks `workdir` against `config`, then records the resolved config."""
  check(workdir, config, fresh=fresh)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  if fresh and os.path.exists(path) and jax.process_index() == 0:
    _move_aside(workdir)
  if jax.process_index() == 0:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.write(config.to_json(indent=2))
    os.replace(tmp, path)


def _move_aside(workdir: str) -> None:
  """Moves the previous run's files into previous_runs/<timestamp>/."""
  target = os.path.join(workdir, "previous_runs", time.strftime("%Y%m%d-%H%M%S"))
  os.makedirs(target)
  for name in os.listdir(workdir):
    if name != "previous_runs":
      os.rename(os.path.join(workdir, name), os.path.join(target, name))
