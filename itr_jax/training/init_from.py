"""Fine-tuning: a new run's parameters from another run's checkpoint.

`config.train.init_from` names either a workdir written by itr_jax.train
(its best checkpoint by dev RSUM, else its latest) or one checkpoint step
directory (`<workdir>/checkpoints/<step>`). Only the parameters are taken;
the new run's optimizer state, step and learning-rate schedule start fresh.
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


def _describe(tree) -> dict:
  return {jax.tree_util.keystr(k): (tuple(v.shape), np.dtype(v.dtype).name)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def load_params(path: str, abstract_params) -> tuple[object, str]:
  """(parameters of the checkpoint `path` names, placed like `abstract_params`, its name).

  `abstract_params` (ShapeDtypeStructs carrying shardings) is the new run's
  parameter tree; the checkpoint's must have the same names and shapes
  (ValueError listing the differences otherwise). They are cast to the new
  run's parameter dtypes.
  """
  directory, step = resolve(path)
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.StandardCheckpointHandler())
  try:
    saved = manager.item_metadata(step)
    saved = getattr(saved, "tree", saved)
    if "params" not in saved:
      raise ValueError(f"Checkpoint {directory}/{step} holds no `params`.")
    want, have = _describe(abstract_params), _describe(saved["params"])
    diffs = sorted(k for k in set(want) | set(have)
                   if want.get(k, (None,))[0] != have.get(k, (None,))[0])
    if diffs:
      details = "; ".join(f"{k}: checkpoint {have.get(k, ('missing',))[0]}, "
                          f"this model {want.get(k, ('missing',))[0]}" for k in diffs[:8])
      raise ValueError(
          f"config.train.init_from: the parameters of {directory}/{step} do not "
          f"fit this model ({len(diffs)} differ: {details}). Use the same "
          "model.* settings (and vocabulary size) as the source run.")
    # Restore the whole saved state onto one device (its optimizer state is
    # dropped), then place the parameters as the new run shards them.
    device = jax.sharding.make_single_device_sharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved)
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  finally:
    manager.close()
  params = jax.tree.map(
      lambda x, a: jax.device_put(x.astype(a.dtype), a.sharding),
      restored["params"], abstract_params)
  return params, f"{directory}/{step}"
