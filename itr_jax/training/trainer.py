"""The train loop: one readable function, big_vision style.

  train_and_evaluate(config, workdir)

prepares the data, builds model and optimizer, resumes from the latest
checkpoint in `workdir` if there is one, trains with the jit-compiled step,
evaluates on the dev split at every epoch end (and once before training, so
the untrained model's numbers are on record), and keeps the latest N
checkpoints plus the best by dev RSUM.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from itr_jax import filesystem as fs
from itr_jax import losses
from itr_jax import metrics as metrics_lib
from itr_jax import models
from itr_jax import sharding
from itr_jax.evaluation import evaluate
from itr_jax.training import augment as augment_lib
from itr_jax.training import experiment_data
from itr_jax.training import checkpointing
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import init_from as init_from_lib
from itr_jax.training import lit
from itr_jax.training import paths
from itr_jax.training import plateau as plateau_lib
from itr_jax.training import preemption as preemption_lib
from itr_jax import progress as progress_lib
from itr_jax.training import reporting
from itr_jax.training import state as state_lib
from itr_jax.training import train_step as train_step_lib
from itr_jax.training import validation
from itr_jax.training import workdir as workdir_lib

# What the progress bar shows; everything is logged to TensorBoard/JSONL.
_PROGRESS_KEYS = ("loss", "pairwise", "listwise", "ndcg_i2t", "ndcg_t2i")


class NonFiniteLossError(FloatingPointError):
  """Training produced NaN/Inf; the message names the term and the step."""


def masks_words(config: ml_collections.ConfigDict) -> bool:
  """Whether caption augmentation needs a `<mask>` word after the vocabulary.

  As VSE-infinity's bigru branch (`vocab.add_word('<mask>')`), the mask
  token of a word vocabulary is one extra id, `len(vocab)`; WordPiece
  vocabularies have their own [MASK].
  """
  return (config.train.get("augment", {}).get("caption_tokens", 0.0) > 0
          and config.model.get("text_tower", "gru") != "bert")


def build_model(config: ml_collections.ConfigDict, vocab_size: int):
  """The model of config.model, with the vocabulary's size filled in."""
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  vocab_size += int(masks_words(config))
  if not model_config.vocab_size:
    model_config.vocab_size = vocab_size
  elif model_config.vocab_size < vocab_size:
    raise ValueError(f"config.model.vocab_size={model_config.vocab_size} is "
                     f"smaller than the vocabulary ({vocab_size} words); set it "
                     "to 0 to use the vocabulary's size.")
  return models.create_model(model_config)


def create_train_state(config: ml_collections.ConfigDict, model, tx,
                       split, pretrained_bert=None) -> state_lib.TrainState:
  """Fresh parameters and model variables (seeded by config.seed), optimizer
  state and RNG key.

  `pretrained_bert` (BERT text tower only) replaces the tower's initial BERT
  weights (`models.pretrained_text_tower(config.model)`).
  """
  # Pixel models (CLIP / SigLIP) know their input shape, the others take the
  # split's region features.
  # (Shape-only splits, e.g. the checkpoint importer's, give regions x dim.)
  image_shape = (getattr(model, "image_shape", None)
                 or getattr(split, "image_input_shape", None)
                 or (split.num_regions, split.feature_dim))
  images = jnp.zeros((1, *image_shape), jnp.float32)
  tokens = jnp.zeros((1, min(config.data.max_len, getattr(model, "context_length", 1 << 30))),
                     jnp.int32)
  lengths = jnp.full((1,), 2, jnp.int32)
  # One compiled program instead of one dispatch per operation (2-3x faster
  # start; the same bits: initializers.scaled_normal).
  variables = dict(jax.jit(model.init)(jax.random.PRNGKey(config.seed), images, tokens,
                                       lengths))
  params = variables.pop("params")
  if pretrained_bert is not None:
    params = models.with_pretrained_bert(params, pretrained_bert)
  return state_lib.TrainState.create(apply_fn=model.apply, params=params, tx=tx,
                                     model_state=variables,
                                     rng=state_lib.initial_rng(config.seed))


def make_augment(config: ml_collections.ConfigDict, vocab):
  """`config.train.augment`'s batch augmentation for `vocab`'s ids, or None."""
  if masks_words(config):
    mask_id, num_ids, extra = len(vocab), len(vocab) + 1, {}
  elif config.model.get("text_tower", "gru") == "bert":
    mask_id, continuation = vocab.mask_and_continuation()
    num_ids, extra = len(vocab), dict(keep_ends=True, continuation=continuation)
  else:
    mask_id, num_ids, extra = None, None, {}
  return augment_lib.make_augment(
      config.train.get("augment", {}), seed=config.seed, mask_id=mask_id,
      num_ids=num_ids, **extra)


def abstract_train_state(config, model, tx, split):
  """Shapes and dtypes of the train state, for restoring without initialising."""
  return jax.eval_shape(lambda: create_train_state(config, model, tx, split))


def placed_abstract_state(config, model, tx, split, mesh):
  """(abstract state carrying its shardings on `mesh`, the shardings tree).

  Restoring into it places a checkpoint on this mesh, whatever the device
  count it was saved from.
  """
  abstract_state = abstract_train_state(config, model, tx, split)
  state_sharding = sharding.state_shardings(abstract_state, mesh, config.sharding)
  return sharding.with_shardings(abstract_state, state_sharding), state_sharding


def check_finite(step_metrics: list[dict], first_step: int) -> None:
  """Raises NonFiniteLossError at the first step with a NaN/Inf metric.

  `step_metrics[i]` holds the host copies of step `first_step + i`'s metrics.
  The message names the step and every non-finite term (pairwise = triplet,
  listwise = 1 - S-NDCG, ndcg_i2t / ndcg_t2i = the direction, grad_norm).
  """
  for i, metrics in enumerate(step_metrics):
    bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
    if bad:
      raise NonFiniteLossError(
          f"Non-finite values at step {first_step + i + 1}: " +
          ", ".join(f"{k}={float(metrics[k])}" for k in bad) +
          ". Training stopped; the last good checkpoint is kept. Lower "
          "optim.learning_rate or optim.grad_clip, raise loss.tau, or check "
          "the inputs.")


def _announce(message: str) -> None:
  """A line on the console (process 0) and in the log."""
  logging.info(message)
  if jax.process_index() == 0:
    tqdm.tqdm.write(message)


def _check_eval_every_steps(config: ml_collections.ConfigDict) -> None:
  every = config.eval.get("every_steps", 0)
  if not isinstance(every, int) or every < 0:
    raise ValueError(f"config.eval.every_steps must be an integer >= 0 (0: only "
                     f"at epoch ends), got {every!r}.")


def _source_vocab(config: ml_collections.ConfigDict) -> None:
  """Fine-tuning a word-vocabulary model keeps the source run's word ids.

  Sets config.data.vocab_path to the source workdir's vocab.json unless it is
  set already (recorded in the new run's config, so resuming agrees).
  """
  if config.model.get("text_tower", "gru") == "bert" or config.data.vocab_path:
    return
  directory, _ = init_from_lib.resolve(config.train.init_from)
  vocab = fs.join(fs.dirname(directory), experiment_data.VOCAB_FILE)
  if fs.exists(vocab):
    config.data.vocab_path = vocab


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       fresh: bool = False) -> dict:
  """Trains per `config`, writing into `workdir`; returns the best dev metrics.

  Everything that can be checked is checked before anything is written into
  `workdir`: every config field, the workdir path, the data (train, dev and
  test splits), and that `workdir` does not hold another run (unless
  `fresh`, which moves that run aside). Then the workdir's lock is taken, so
  a second trainer on the same workdir is refused.
  """
  validation.check_config(config)
  validation.check_workdir(workdir)
  augment_lib.check_config(config.train.get("augment", {}))
  paths.resolve_config_paths(config)  # recorded absolute: see training.paths
  _check_eval_every_steps(config)
  if config.train.get("init_from"):
    init_from_lib.resolve(config.train.init_from)  # a bad path fails before any write
    _source_vocab(config)
  workdir_lib.check(workdir, config, fresh=fresh)
  # Process 0 first: it generates a synthetic dataset if needed, once.
  data = sharding.main_process_first(lambda: experiment_data.prepare(
      config, workdir, reuse_workdir_vocab=not fresh))
  model = build_model(config, len(data.vocab))
  # LiT: the locked image tower's weights, read (and checked) before any write.
  locked = lit.locked_params(config, None if fresh else workdir, model) if lit.enabled(
      config) else None
  with workdir_lib.WorkdirLock(workdir) as lock:
    return _train(config, workdir, data, model, fresh=fresh, lock=lock, locked=locked)


def _pending_record(host_metrics: list[dict]) -> dict:
  """The metrics of steps since the last log step, as JSON (float32 values)."""
  return {"pending_train_metrics": [
      {k: float(np.float32(v)) for k, v in m.items()} for m in host_metrics]}


def _restore_pending(extra: dict) -> list[dict]:
  return [{k: np.float32(v) for k, v in m.items()}
          for m in extra.get("pending_train_metrics", [])]


def _report_truncation(config, data, log, start_step: int) -> None:
  """Says how many train captions data.max_len cuts (the official code cuts none)."""
  truncated = data.truncated_train_captions
  if jax.process_index() == 0:
    tqdm.tqdm.write(
        f"data.max_len={config.data.max_len} truncates {truncated} of "
        f"{data.train.num_captions} train captions "
        f"({100 * truncated / data.train.num_captions:.2f}%)"
        + (": raise data.max_len to keep them whole." if truncated else "."))
  if start_step == 0:
    log.write(0, "data", {"truncated_train_captions": truncated,
                          "train_captions": data.train.num_captions})


def _window_summary(pending: list[dict], grad_clip) -> dict:
  """Means of the per-step metrics since the last log step, and `clip_rate`:
  the share of those steps whose gradient norm exceeded `optim.grad_clip`
  (clipping bound; with loss.reduction="sum" as often as the official code's)."""
  summary = {k: float(np.mean([m[k] for m in pending])) for k in pending[0]}
  if grad_clip:
    summary["clip_rate"] = float(np.mean([m["grad_norm"] > grad_clip for m in pending]))
  return summary


def _train(config, workdir, data, model, *, fresh: bool, lock=None, locked=None) -> dict:
  """The loop of `train_and_evaluate`, once everything is validated and locked.

  `locked`: LiT's (image tower parameters, their source), see `lit`.
  """
  workdir_lib.prepare(workdir, config, fresh=fresh)
  data.save_vocab(workdir)
  if locked is not None:
    # From here on the splits hold the locked tower's image embeddings.
    data = lit.embed_data(config, workdir, data, model, locked[0])
    _announce(f"LiT: image tower locked ({locked[1]}); training on its cached "
              "embeddings of each image")

  steps_per_epoch = data.steps_per_epoch
  total_steps = steps_per_epoch * config.train.num_epochs
  if config.train.get("max_steps"):
    total_steps = min(total_steps, config.train.max_steps)
  warmup_steps = steps_per_epoch * config.train.warmup_epochs
  tx = optimizer_lib.create_optimizer(config.optim, steps_per_epoch)
  schedule = optimizer_lib.learning_rate_schedule(config.optim, steps_per_epoch)

  checkpoints = checkpointing.Checkpoints(workdir, keep=config.train.keep_checkpoints)
  # Devices: the state is placed by config.sharding's rules, batches split
  # over the mesh's data axes; orbax restores straight into that placement.
  mesh = sharding.create_mesh(config.mesh)
  sharding.check_batch_size(config.train.batch_size, mesh)
  placed_state, state_sharding = placed_abstract_state(config, model, tx, data.train, mesh)
  start_step, state = checkpoints.restore_latest(placed_state)
  pending = []  # per-step metrics since the last log step, fetched lazily
  if start_step is None:
    # Pretrained weights only when starting fresh: a resumed run restores
    # its fine-tuned ones. An argument, not a constant baked into the jit.
    start_step, state = 0, jax.jit(
        lambda pretrained: create_train_state(config, model, tx, data.train,
                                              pretrained),
        out_shardings=state_sharding)(models.pretrained_text_tower(config.model))
    if config.train.get("init_from"):
      # Every model variable (BatchNorm statistics too); Adam's moments
      # start at zero whatever the parameters.
      variables, source = init_from_lib.load_variables(
          config.train.init_from, init_from_lib.model_fields(placed_state),
          ignore=("image_encoder",) if locked is not None else ())
      state = state.replace(**variables)
      _announce(f"Initialised the model variables ({', '.join(variables)}; not the "
                f"optimizer state) from {source}")
  else:
    _announce(f"Resumed from step {start_step} in {checkpoints.directory}")
    # A preemption checkpoint between log steps carries the steps of the
    # open logging window, so the resumed run logs the same means.
    pending = _restore_pending(checkpoints.extra(start_step))
  checkpoints.prune()
  # Drop what a killed run logged after its last checkpoint: redone below.
  reporting.truncate_after(workdir, start_step)
  log = reporting.MetricsLog(workdir)
  _report_truncation(config, data, log, start_step)
  preemption = preemption_lib.PreemptionWatcher()
  # Its ETA counts training steps only (not compilation, evaluations, saves).
  progress = progress_lib.ProgressBar(total=total_steps, initial=start_step, unit="step",
                                      dynamic_ncols=True,
                                      disable=jax.process_index() != 0)
  try:
    # Seconds not spent training since the last log step (dev evaluations,
    # checkpoint writes): left out of steps_per_second.
    not_training = [0.0]

    def evaluate_dev(state, step: int) -> dict:
      t0 = time.time()
      with progress.paused():
        metrics = evaluate.evaluate_split(model, state.variables(), data.dev,
                                          data.vocab, config,
                                          rsc_relevance=data.dev_relevance)
      metrics["eval_seconds"] = time.time() - t0
      not_training[0] += metrics["eval_seconds"]
      log.write(step, "dev", {**metrics, "epoch": step / steps_per_epoch})
      if jax.process_index() == 0:
        tqdm.tqdm.write(f"[dev] step {step} epoch {step / steps_per_epoch:.2f}: "
                        + reporting.format_metrics(
                            metrics, [metrics_lib.ndcg_key(key, config.eval.ndcg_k)
                                      for key in evaluate.SUMMARY_KEYS]))
      return metrics

    if start_step == 0:
      log.write_hparams(config)
      evaluate_dev(state, 0)  # the untrained model, as a baseline

    augment = make_augment(config, data.vocab)
    options = losses.LossOptions.from_config(config.loss)
    train_steps = {
        hardest: train_step_lib.make_train_step(
            model, options.replace(hardest=hardest), mesh=mesh,
            state_sharding=state_sharding, augment=augment)
        for hardest in (True, False)}
    # An epoch's last, smaller batch (data.drop_last False) must split over the
    # devices and processes; the train step compiles once more for its shape.
    batches = data.train_batches(start_step=start_step, batch_multiple=math.lcm(
        sharding.num_batch_shards(mesh), jax.process_count()))
    last_log_time, last_log_step = time.time(), start_step
    compile_seconds = None
    # Epoch-mean loss for the plateau notice (from the epoch this process
    # started in; a resumed run counts its window afresh).
    plateau = plateau_lib.PlateauNotice(config.model.name,
                                        config.train.get("plateau_notice_epochs", 0))
    epoch_loss = [0.0, 0]
    for step in range(start_step, total_steps):
      if lock is not None:
        lock.check()  # stop rather than train in a workdir another trainer may take
      batch = sharding.global_batch(next(batches), mesh)
      step_start = time.time()
      done = step + 1
      # The first step, and the first after the warm-up switch, compile:
      # their time is not training speed.
      with progress.paused() if step in (start_step, warmup_steps) else contextlib.nullcontext():
        state, metrics = train_steps[step >= warmup_steps](state, batch)
        if step == start_step:
          jax.block_until_ready(metrics)
          compile_seconds = time.time() - step_start
          last_log_time, last_log_step = time.time(), done
          # The window starts now: the step-0 evaluation lies before it.
          not_training[0] = 0.0
      pending.append(metrics)
      progress.update(1)

      epoch_end = done % steps_per_epoch == 0
      step_eval = bool(config.eval.get("every_steps")) and done % config.eval.every_steps == 0
      preempted = preemption.should_stop(done)
      # The last step (a train.max_steps one may end mid-epoch) is saved and evaluated.
      scheduled_save = (epoch_end or done % config.train.checkpoint_every_steps == 0
                        or step_eval or done == total_steps)
      log_step = (done % config.train.log_every_steps == 0 or done == total_steps
                  or scheduled_save)
      extra = None
      if log_step or preempted:
        # Fetching metrics syncs with the device: only at log and save steps.
        # Checking before every save keeps NaN states out of checkpoints.
        pending = jax.device_get(pending)
        check_finite(pending, done - len(pending))
      if log_step:
        summary = _window_summary(pending, config.optim.get("grad_clip"))
        epoch_loss[0] += float(np.sum([m["loss"] for m in pending]))
        epoch_loss[1] += len(pending)
        pending = []
        now = time.time()
        # Excludes the first (compiling) step, evaluations and checkpoint
        # writes (logged separately: compile_seconds, dev eval_seconds).
        if done > last_log_step:
          summary["steps_per_second"] = (done - last_log_step) / max(
              now - last_log_time - not_training[0], 1e-9)
        if compile_seconds is not None:
          summary["compile_seconds"], compile_seconds = compile_seconds, None
        not_training[0] = 0.0
        summary["learning_rate"] = float(schedule(step))
        summary["epoch"] = done / steps_per_epoch
        last_log_time, last_log_step = now, done
        log.write(done, "train", summary)
        progress.set_postfix_str(reporting.format_metrics(summary, _PROGRESS_KEYS))
        if epoch_end:
          notice = plateau.end_epoch(epoch_loss[0] / max(epoch_loss[1], 1))
          epoch_loss = [0.0, 0]
          if notice:
            with progress.paused():
              _announce(notice)
      elif preempted:
        # Not a log step of an uninterrupted run: the open logging window goes
        # into the checkpoint instead of the log, so the logs stay identical.
        extra = _pending_record(pending)

      if scheduled_save or preempted:
        evaluate_now = step_eval or done == total_steps or epoch_end and (
            (done // steps_per_epoch) % config.eval.every_epochs == 0)
        dev = evaluate_dev(state, done) if evaluate_now else None
        save_start = time.time()
        with progress.paused():
          checkpoints.save(done, state,
                           metrics=None if dev is None else {"rsum": float(dev["rsum"])},
                           extra=extra)
        not_training[0] += time.time() - save_start
      if preempted:
        progress.write(f"Preempted: saved a checkpoint at step {done}; run the "
                        "same command again to resume.")
        break
    progress.close()  # before the input pipeline's shutdown, which is not training
    batches.close()

    return {"best_step": checkpoints.best_step(),
            **(checkpoints.best_metrics() or {})}
  finally:
    preemption.close()
    progress.close()
    log.close()
    checkpoints.close()
