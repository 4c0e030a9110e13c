"""Fine-tuning: a new run's parameters from another run's checkpoint.

`config.train.init_from` names either a workdir written by itr_jax.train
(its best checkpoint by dev RSUM, else its latest) or one checkpoint step
directory (`<workdir>/checkpoints/<step>`). Every variable of the source
model is taken: its parameters and its other collections (BatchNorm running
statistics of VSE-infinity's region MLP and of SAF), so step 0 of the new run
scores exactly like the source. Not taken: the optimizer state (Adam's
moments), the step, the dropout RNG and the learning-rate schedule, which
start fresh.
"""
from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp

from itr_jax import filesystem as fs
from itr_jax.training import checkpointing


def resolve(path: str) -> tuple[str, int]:
  """(checkpoints directory, step) that `path` (workdir or step dir) names."""
  path = fs.absolute(path)
  if fs.isdir(fs.join(path, "checkpoints")):
    source = checkpointing.Checkpoints(path, read_only=True)
    step = source.best_step() or source.latest_step()
    directory = source.directory
    source.close()
    if step is None:
      raise FileNotFoundError(
          f"config.train.init_from={path!r}: that workdir has no checkpoint yet.")
    return directory, step
  name = fs.basename(path)
  if name.isdigit() and fs.isdir(fs.join(path, "default")):
    return fs.dirname(path.rstrip("/")), int(name)
  raise FileNotFoundError(
      f"config.train.init_from={path!r} is neither a workdir with checkpoints/ "
      "nor a checkpoint step directory (<workdir>/checkpoints/<step>).")


def describe(tree) -> dict:
  """{leaf path: (shape, dtype name)} of a tree of arrays or abstract arrays."""
  return {jax.tree_util.keystr(k): (tuple(v.shape), np.dtype(v.dtype).name)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


# The train-state fields holding model variables (state.TrainState): what a
# fine-tune takes. `opt_state`, `step` and `rng` are not.
MODEL_FIELDS = ("params", "model_state")


def model_variables_of(saved: dict) -> dict:
  """{"params", "model_state"} of a saved train state of any layout (the
  older SGR/SAF layout kept BatchNorm statistics in `batch_stats`)."""
  model_state = dict(saved.get("model_state") or {})
  if saved.get("batch_stats"):
    model_state["batch_stats"] = saved["batch_stats"]
  return {"params": saved["params"], "model_state": model_state}


def model_fields(state) -> dict:
  """{field: tree} of `state`'s model variables (non-empty MODEL_FIELDS)."""
  return {f: getattr(state, f) for f in MODEL_FIELDS if getattr(state, f, None)}


def restore_on_one_device(directory: str, step: int) -> dict:
  """The whole train state saved at `step` in the checkpoints `directory`,
  as arrays on this process's first device (no model or data needed)."""
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler())
  try:
    saved = manager.item_metadata(step)
    saved = getattr(saved, "tree", saved)
    device = jax.sharding.make_single_device_sharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)
    return manager.restore(step, args=ocp.args.StandardRestore(target))
  finally:
    manager.close()


def load_params(path: str, abstract_params) -> tuple[object, str]:
  """(parameters of the checkpoint `path` names, placed like `abstract_params`, its name)."""
  fields, name = load_variables(path, {"params": abstract_params})
  return fields["params"], name


def _without(variables: dict, ignore) -> dict:
  if not ignore:
    return variables
  return {**variables, "params": {k: v for k, v in variables["params"].items()
                                  if k not in ignore}}


def load_variables(path: str, abstract: dict, ignore=()) -> tuple[dict, str]:
  """({field: tree} of the checkpoint `path` names, placed like `abstract`, its name).

  `abstract` maps train-state fields (`model_fields` of the new run's
  abstract state: ShapeDtypeStructs carrying shardings) to their trees; the
  checkpoint's must have the same names and shapes (ValueError listing the
  differences otherwise). They are cast to the new run's dtypes. `ignore`:
  top-level parameter names of the checkpoint not taken (LiT's image tower).
  """
  directory, step = resolve(path)
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler())
  try:
    saved = manager.item_metadata(step)
    saved = getattr(saved, "tree", saved)
    if "params" not in saved:
      raise ValueError(f"Checkpoint {directory}/{step} holds no `params`.")
    saved = _without(model_variables_of(saved), ignore)
    missing = [f for f in abstract if not saved.get(f)]
    if missing:
      raise ValueError(f"Checkpoint {directory}/{step} holds no {missing}: it is "
                       "not a run of this model.")
    want = describe({f: abstract[f] for f in abstract})
    have = describe({f: saved[f] for f in abstract})
    diffs = sorted(k for k in set(want) | set(have)
                   if want.get(k, (None,))[0] != have.get(k, (None,))[0])
    if diffs:
      details = "; ".join(f"{k}: checkpoint {have.get(k, ('missing',))[0]}, "
                          f"this model {want.get(k, ('missing',))[0]}" for k in diffs[:8])
      raise ValueError(
          f"config.train.init_from: the variables of {directory}/{step} do not "
          f"fit this model ({len(diffs)} differ: {details}). Use the same "
          "model.* settings (and vocabulary size) as the source run.")
  finally:
    manager.close()
  restored = _without(model_variables_of(restore_on_one_device(directory, step)), ignore)
  placed = {f: jax.tree.map(lambda x, a: jax.device_put(x.astype(a.dtype), a.sharding),
                            restored[f], abstract[f]) for f in abstract}
  return placed, f"{directory}/{step}"
