"""A trained run opened for evaluation: config (+ overrides), a split, model, parameters.

  run = load_run("workdirs/demo", "test", "best", data_dir=None,
                 overrides={"eval.ndcg_k": 10})
  image_emb, caption_emb = evaluate.encode_eval_split(
      run.model, run.params, run.split, run.vocab, run.config)

Shared by itr_jax.evaluate, itr_jax.retrieve and itr_jax.report.examples.
"""
from __future__ import annotations

import dataclasses

from itr_jax import sharding
from itr_jax.training import checkpointing
from itr_jax.training import experiment_data
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import paths
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib

# Config fields an evaluation may change: how it is computed and on what
# data, not the model the checkpoint holds.
OVERRIDABLE = ("eval.", "data.")


def restore_params(config, workdir: str, model, split, which: str):
  """Parameters of checkpoint `which` ('best', 'latest' or a step) in `workdir`."""
  checkpoints = checkpointing.Checkpoints(workdir, keep=config.train.keep_checkpoints)
  if which == "best":
    step = checkpoints.best_step() or checkpoints.latest_step()
  elif which == "latest":
    step = checkpoints.latest_step()
  else:
    step = int(which)
  if step is None or step not in checkpoints.manager.all_steps():
    raise ValueError(
        f"No checkpoint {which!r} in {checkpoints.directory} (have "
        f"{list(checkpoints.manager.all_steps())}); train first with "
        "`python -m itr_jax.train`.")
  # The optimizer is only needed for the state's structure. Restoring onto
  # this machine's devices works whatever device count trained the run.
  tx = optimizer_lib.create_optimizer(config.optim, steps_per_epoch=1)
  abstract, _ = trainer.placed_abstract_state(
      config, model, tx, split, sharding.create_mesh(config.mesh))
  state = checkpoints.restore(step, abstract)
  checkpoints.close()
  return state.params, step


@dataclasses.dataclass
class LoadedRun:
  """A trained run's model and parameters, with one split opened."""
  config: object  # the run's config with the evaluation's overrides
  split_name: str
  split: object  # precomputed.PrecomputedSplit
  vocab: object
  model: object
  params: object
  step: int
  data_dir: str


def apply_overrides(config, overrides: dict | None, data_dir: str | None):
  """`config` with `overrides` ({dotted field: value}) and `data_dir` applied.

  Only OVERRIDABLE fields may change: the others define the checkpoint's model.
  """
  overrides = dict(overrides or {})
  bad = sorted(k for k in overrides if not k.startswith(OVERRIDABLE))
  if bad:
    raise ValueError(
        f"Evaluation can only override config fields under {OVERRIDABLE}, got "
        f"{bad}: the others are fixed by the trained checkpoint.")
  if data_dir:
    overrides["data.data_dir"] = paths.absolute(data_dir)
  for field, value in overrides.items():
    *parents, leaf = field.split(".")
    node = config
    for key in parents:
      node = node[key]
    node[leaf] = value
  return config


def load_run(workdir: str, split_name: str | None = None, which: str = "best", *,
             data_dir: str | None = None, overrides: dict | None = None) -> LoadedRun:
  """Opens `workdir`'s run: config (+ overrides), a split, model, parameters."""
  config = apply_overrides(workdir_lib.load_config(workdir), overrides, data_dir)
  split_name = split_name or config.data.test_split
  directory = experiment_data.data_dir(config, generate=False)
  split = experiment_data.load_split(config, directory, split_name)
  vocab = experiment_data.resolve_tokenizer(config, directory, workdir=workdir)
  model = trainer.build_model(config, len(vocab))
  params, step = restore_params(config, workdir, model, split, which)
  return LoadedRun(config, split_name, split, vocab, model, params, step, directory)
