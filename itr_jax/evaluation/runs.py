"""A trained run opened for evaluation: config (+ overrides), a split, model, parameters.

  run = load_run("workdirs/demo", "test", "best", data_dir=None,
                 overrides={"eval.ndcg_k": 10})
  image_emb, caption_emb = evaluate.encode_eval_split(
      run.model, run.params, run.split, run.vocab, run.config)

Shared by itr_jax.evaluate, itr_jax.retrieve and itr_jax.report.examples.
"""
from __future__ import annotations

import dataclasses

from absl import logging

from itr_jax import filesystem as fs
from itr_jax import sharding
from itr_jax.training import checkpointing
from itr_jax.training import experiment_data
from itr_jax.training import lit
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib

# Config fields an evaluation may change: how it is computed and on what
# data, not the model the checkpoint holds.
OVERRIDABLE = ("eval.", "data.")


def steps_to_try(checkpoints, which: str) -> list[int]:
  """The steps `which` names, best first, then the fallbacks in order."""
  steps = sorted(checkpoints.all_steps(), reverse=True)
  if which in ("best", "latest"):
    best = checkpoints.best_step() if which == "best" else None
    return ([best] if best is not None else []) + [s for s in steps if s != best]
  try:
    step = int(which)
  except ValueError:
    raise ValueError(f"--checkpoint={which!r} is not 'best', 'latest' or a step "
                     f"number; the checkpoints in {checkpoints.directory} are at "
                     f"steps {sorted(steps)}.") from None
  if step not in steps:
    damaged = checkpoints.damaged.get(step)
    raise ValueError(
        f"--checkpoint={which}: " +
        (f"that checkpoint is damaged ({damaged})" if damaged else
         "there is no such checkpoint") +
        f"; intact ones in {checkpoints.directory} are at steps {sorted(steps)}.")
  return [step]


def restore_params(config, workdir: str, model, split, which: str):
  """Variables (parameters + any model state, e.g. BatchNorm statistics) of
  checkpoint `which` ('best', 'latest' or a step) in `workdir`.

  Checkpoints are verified against their integrity records and nothing on
  disk is changed (training may be running). For 'best' and 'latest', a
  damaged or unrestorable checkpoint is skipped with a warning naming it and
  the next newest is used; an explicit step fails with one sentence.
  """
  if not fs.isdir(fs.join(workdir, "checkpoints")):
    reason = workdir_lib.no_checkpoints_reason(workdir)
    if reason:
      raise ValueError(f"{workdir!r} has no checkpoints: {reason}")
    raise ValueError(f"No checkpoints in {workdir!r}; train first with "
                     "`python -m itr_jax.train`.")
  checkpoints = checkpointing.Checkpoints(
      workdir, keep=config.train.keep_checkpoints, read_only=True)
  try:
    for step, reason in sorted(checkpoints.damaged.items()):
      logging.warning("Skipping damaged checkpoint step %d in %s: %s.", step,
                      checkpoints.directory, reason)
    candidates = steps_to_try(checkpoints, which)
    if not candidates:
      raise ValueError(f"No intact checkpoint in {checkpoints.directory}; "
                       "train first with `python -m itr_jax.train`.")
    # The optimizer is only needed for the state's structure. Restoring onto
    # this machine's devices works whatever device count trained the run.
    tx = optimizer_lib.create_optimizer(config.optim, steps_per_epoch=1)
    abstract, _ = trainer.placed_abstract_state(
        config, model, tx, split, sharding.create_mesh(config.mesh))
    for step in candidates:
      try:
        with checkpointing.quiet_failures():
          return checkpoints.restore(step, abstract).variables(), step
      except Exception as e:  # pylint: disable=broad-except
        if len(candidates) == 1 or checkpoints.status.get(step) == "verified":
          raise ValueError(
              f"Checkpoint step {step} in {checkpoints.directory} cannot be "
              f"restored ({checkpointing.describe(e)}).") from e
        logging.warning("Checkpoint step %d in %s cannot be restored (%s); "
                        "trying the previous one.", step, checkpoints.directory,
                        checkpointing.describe(e))
    raise ValueError(f"No checkpoint in {checkpoints.directory} can be restored.")
  finally:
    checkpoints.close()


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
  # The split's images as stored (files, records, region features), also for
  # a LiT run, whose `split.images` are its locked tower's embeddings.
  stored_images: object = None


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
    overrides["data.data_dir"] = fs.absolute(data_dir)
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
  if not split_name:
    raise ValueError("This run has no test split (config.data.test_split is "
                     "empty); pass the split to evaluate, e.g. --split=dev.")
  directory = experiment_data.data_dir(config, generate=False)
  split = experiment_data.load_split(config, directory, split_name)
  vocab = experiment_data.resolve_tokenizer(config, directory, workdir=workdir)
  model = trainer.build_model(config, len(vocab))
  stored_images = split.images
  if lit.enabled(config):  # the locked tower's embeddings stand in for the images
    split = lit.embed_run_split(config, workdir, model, split, directory)
  params, step = restore_params(config, workdir, model, split, which)
  return LoadedRun(config, split_name, split, vocab, model, params, step, directory,
                   stored_images)
