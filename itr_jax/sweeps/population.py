"""Population training: several sweep members in one compiled program (vmap).

Members that differ only in `seed`, `loss.weight`, `loss.tau` and
`loss.margin` share the model's shapes, the optimizer and the data, so their
train states can be stacked along a leading population axis and stepped by
one `jax.vmap`-ed train step: one process, one compilation, and P small
models batched into larger matrix products.

  train_population(base_config, members)

writes each member's results into its own workdir exactly like a separate
run would for the report (`config.json`, `metrics.jsonl`, TensorBoard,
`eval_test.json` of the best-by-dev-RSUM parameters, `DONE`), so
`python -m itr_jax.report <sweep_dir>` works on it unchanged.

Differences from separate runs, by design:

* all members see the same batches in the same order (that of the base
  config's `seed`); the member's `seed` only changes its initialisation;
* one device (no mesh): the population axis is the only parallelism;
* no checkpoints: an interrupted population starts over (its members' partial
  logs are moved to previous_runs/; the best parameters are kept in host
  memory for the final test evaluation).
"""
from __future__ import annotations

import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from itr_jax import losses
from itr_jax import models
from itr_jax.evaluation import evaluate
from itr_jax.sweeps import declaration
from itr_jax.sweeps import members as members_lib
from itr_jax.training import experiment_data
from itr_jax.training import optimizer as optimizer_lib
from itr_jax import progress as progress_lib
from itr_jax.training import reporting
from itr_jax.training import state as state_lib
from itr_jax.training import train_step as train_step_lib
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib

# Fields a population may vary; everything else must be the same for all.
HPARAMS = ("loss.weight", "loss.tau", "loss.margin")
VMAPPABLE = ("seed",) + HPARAMS


def check_population(overrides_list: Sequence[dict]) -> None:
  """Raises ValueError if a member varies a field the population cannot."""
  for overrides in overrides_list:
    bad = sorted(set(overrides) - set(VMAPPABLE))
    if bad:
      raise ValueError(
          f"population training can vary only {VMAPPABLE}; member {overrides} "
          f"also sets {bad}. Run this sweep without --population, or move "
          "those fields into --set (common to all members).")


def init_population(config: ml_collections.ConfigDict, model, tx, split,
                    seeds: Sequence[int]) -> state_lib.TrainState:
  """Train states stacked on axis 0, member i initialised from seeds[i]."""
  def one(seed):
    member = ml_collections.ConfigDict(config.to_dict())
    member.seed = int(seed)
    return trainer.create_train_state(member, model, tx, split)
  states = [one(s) for s in seeds]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def hparams_array(configs: Sequence[ml_collections.ConfigDict]) -> dict[str, jax.Array]:
  """{'weight': [P], 'tau': [P], 'margin': [P]} from the members' configs."""
  return {name.split(".")[1]: jnp.asarray([c.loss[name.split(".")[1]] for c in configs],
                                          jnp.float32) for name in HPARAMS}


def make_population_step(model, loss_config: ml_collections.ConfigDict, *,
                         hardest: bool = True):
  """`step(states [P], hparams {name: [P]}, batch) -> (states, metrics [P])`, jitted.

  Each member runs `train_step.make_train_step`'s step with its own
  weight/tau/margin (traced, so one compilation serves every value).
  """
  options = losses.LossOptions.from_config(loss_config).replace(hardest=hardest)

  def member(state, hp, batch):
    return train_step_lib.make_train_step(model, options.replace(**hp))(state, batch)

  return jax.jit(jax.vmap(member, in_axes=(0, 0, None)), donate_argnums=0)


def _member(tree, i: int):
  return jax.tree.map(lambda x: x[i], tree)


def train_population(base: ml_collections.ConfigDict,
                     members: Sequence[members_lib.Member], *,
                     evaluate_test: bool = True) -> list[dict]:
  """Trains `members` together; returns each member's best dev metrics."""
  check_population([m.overrides for m in members])
  if not members:
    raise ValueError("members is empty")
  if not models.scorer.is_two_tower(trainer.build_model(base, 1)):
    raise ValueError(f"--population trains two-tower backbones only, not model.name="
                     f"{base.model.name!r}; run that sweep without --population.")
  configs = [declaration.apply_overrides(base, m.overrides) for m in members]
  for c in configs:
    train_step_lib.check_loss_config(c.loss)  # bad values fail before any write
  config = base  # shared: data order, model, optimizer, schedule
  if any(config.train.get("augment", {}).values()):
    raise ValueError("population training does not apply config.train.augment "
                     "(VSE-infinity's size augmentation); run this sweep without "
                     "--population.")
  for m, c in zip(members, configs):
    # A population starts over: an earlier, interrupted attempt is moved
    # aside (previous_runs/), not appended to.
    workdir_lib.prepare(m.workdir, c, fresh=True)
    # Evaluation/retrieval of this member say why there is no checkpoint.
    with open(os.path.join(m.workdir, workdir_lib.NO_CHECKPOINTS_FILE), "w") as f:
      f.write("it was trained in a population sweep (itr-sweep --population), "
              "which keeps no checkpoints; its test results are in "
              f"{os.path.join(m.workdir, 'eval_' + c.data.test_split + '.json')}. "
              "To evaluate it otherwise, train it alone: itr-train "
              f"--workdir=NEW_WORKDIR with its overrides {dict(m.overrides)}.")
  data = experiment_data.prepare(config, members[0].workdir, reuse_workdir_vocab=False)
  for m in members:
    data.save_vocab(m.workdir)
  model = trainer.build_model(config, len(data.vocab))
  steps_per_epoch = data.steps_per_epoch
  total_steps = steps_per_epoch * config.train.num_epochs
  if config.train.get("max_steps"):
    total_steps = min(total_steps, config.train.max_steps)
  warmup_steps = steps_per_epoch * config.train.warmup_epochs
  tx = optimizer_lib.create_optimizer(config.optim, steps_per_epoch)
  schedule = optimizer_lib.learning_rate_schedule(config.optim, steps_per_epoch)
  states = init_population(config, model, tx, data.train, [c.seed for c in configs])
  hparams = hparams_array(configs)
  steps = {h: make_population_step(model, config.loss, hardest=h) for h in (True, False)}
  logs = [reporting.MetricsLog(m.workdir) for m in members]
  best = [{"rsum": -np.inf} for _ in members]
  best_params = [None] * len(members)

  def evaluate_dev(step):
    for i, log in enumerate(logs):
      params = _member(states.variables(), i)  # + BatchNorm stats
      metrics = evaluate.evaluate_split(model, params, data.dev, data.vocab, config,
                                        rsc_relevance=data.dev_relevance)
      log.write(step, "dev", {**metrics, "epoch": step / steps_per_epoch})
      if metrics["rsum"] > best[i]["rsum"]:
        best[i] = {"best_step": step, **metrics}
        best_params[i] = jax.device_get(params)

  evaluate_dev(0)
  batches = data.train_batches(start_step=0)
  pending, last_time, last_step = [], time.time(), 0
  for step in progress_lib.ProgressBar(range(total_steps), unit="step",
                                      dynamic_ncols=True):
    states, metrics = steps[step >= warmup_steps](states, hparams, next(batches))
    pending.append(metrics)
    done = step + 1
    epoch_end = done % steps_per_epoch == 0
    if done % config.train.log_every_steps == 0 or epoch_end:
      fetched = jax.device_get(pending)
      pending = []
      now = time.time()
      for i, log in enumerate(logs):
        summary = {k: float(np.mean([m[k][i] for m in fetched])) for k in fetched[0]}
        bad = sorted(k for k, v in summary.items() if not np.isfinite(v))
        if bad:
          raise trainer.NonFiniteLossError(
              f"Non-finite {bad} of member {members[i].name} by step {done}; "
              "lower optim.learning_rate or raise loss.tau for it.")
        summary.update(steps_per_second=(done - last_step) / max(now - last_time, 1e-9),
                       learning_rate=float(schedule(step)), epoch=done / steps_per_epoch)
        log.write(done, "train", summary)
      last_time, last_step = now, done
    if epoch_end and ((done // steps_per_epoch) % config.eval.every_epochs == 0
                      or done == total_steps):
      evaluate_dev(done)
  for log in logs:
    log.close()
  if evaluate_test:
    _evaluate_test(config, data, model, members, best, best_params)
  for m, b in zip(members, best):
    members_lib.mark_done(m, {"population": True, "best_step": b["best_step"]})
  return best


def _evaluate_test(config, data, model, members, best, best_params) -> None:
  """eval_<test_split>.json of each member's best parameters (as itr_jax.evaluate)."""
  name = config.data.test_split
  split = experiment_data.load_split(config, data.data_dir, name)
  for m, b, params in zip(members, best, best_params):
    report = {"checkpoint_step": b["best_step"], "split": name,
              "num_images": split.num_images,
              "full": evaluate.evaluate_split(model, params, split, data.vocab, config)}
    with open(os.path.join(m.workdir, f"eval_{name}.json"), "w") as f:
      json.dump(report, f, indent=2)
