r"""Evaluate a trained run on its test split.

  python -m itr_jax.evaluate --workdir=workdirs/demo [--split=test] \
      [--checkpoint=best|latest|<step>] [--coco_ids=ids.npz]

Reports R@1/5/10, medr, meanr both ways and RSUM, plus NDCG with RSC relevance
(and ground-truth relevance on synthetic scenes). A 5000-image split (MS-COCO
`testall`) is reported with the 5-fold 1K protocol and the 5K protocol;
with --coco_ids (an .npz with `image_ids` [5000] and `caption_ids` [25000],
the COCO ids of the split's rows and captions) ECCV Caption metrics follow.
Results are printed, then written to <workdir>/eval_<split>.json. Damaged
checkpoints are skipped (nothing on disk is changed); errors print one
sentence (the traceback with --verbose).
"""
import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np

from itr_jax import metrics
from itr_jax import sharding
from itr_jax.evaluation import evaluate
from itr_jax.training import checkpointing
from itr_jax.training import errors
from itr_jax.training import experiment_data
from itr_jax.training import integrity
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by itr_jax.train.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.data.test_split).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "'best' (by dev RSUM), 'latest', or a step number.")
_COCO_IDS = flags.DEFINE_string(
    "coco_ids", None, "Optional .npz with COCO `image_ids` and `caption_ids` "
    "for the split's rows/columns: adds ECCV Caption metrics.")
flags.mark_flags_as_required(["workdir"])

COCO_5K_IMAGES = 5000


def _steps_to_try(checkpoints, which: str) -> list[int]:
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
  """Parameters of checkpoint `which` ('best', 'latest' or a step) in `workdir`.

  Checkpoints are verified against their integrity records and nothing on
  disk is changed (training may be running). For 'best' and 'latest', a
  damaged or unrestorable checkpoint is skipped with a warning naming it and
  the next newest is used; an explicit step fails with one sentence.
  """
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ValueError(f"No checkpoints in {workdir!r}; train first with "
                     "`python -m itr_jax.train`.")
  checkpoints = checkpointing.Checkpoints(
      workdir, keep=config.train.keep_checkpoints, read_only=True)
  try:
    for step, reason in sorted(checkpoints.damaged.items()):
      logging.warning("Skipping damaged checkpoint step %d in %s: %s.", step,
                      checkpoints.directory, reason)
    candidates = _steps_to_try(checkpoints, which)
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
          return checkpoints.restore(step, abstract).params, step
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


def evaluate_run(workdir: str, split_name: str | None = None, which: str = "best",
                 coco_ids: str | None = None, write: bool = True) -> dict:
  """Evaluates checkpoint `which` of `workdir` on a split; writes the report if `write`."""
  config = workdir_lib.load_config(workdir)
  ties = evaluate.eval_ties(config)
  split_name = split_name or config.data.test_split
  if not split_name:
    raise ValueError("This run has no test split (config.data.test_split is "
                     "empty); pass the split to evaluate, e.g. --split=dev.")
  directory = experiment_data.data_dir(config)
  split = experiment_data.load_split(config, directory, split_name)
  vocab = experiment_data.resolve_tokenizer(config, directory, workdir=workdir)
  model = trainer.build_model(config, len(vocab))
  params, step = restore_params(config, workdir, model, split, which)

  image_emb, caption_emb = evaluate.encode_eval_split(model, params, split, vocab, config)
  report = {"checkpoint_step": step, "split": split_name, "num_images": split.num_images}
  if split.num_images == COCO_5K_IMAGES:
    sims = image_emb @ caption_emb.T
    report["coco_1k"] = metrics.coco_1k(sims, captions_per_image=split.captions_per_image,
                                        ties=ties)
    report["coco_5k"] = evaluate.retrieval_report(
        image_emb, caption_emb, captions_per_image=split.captions_per_image,
        rsc_relevance=evaluate.split_relevance(split),
        true_relevance=split.true_relevance, ndcg_k=config.eval.ndcg_k, ties=ties)
    if coco_ids:
      ids = np.load(coco_ids)
      report["eccv"] = metrics.eccv_caption_metrics(sims, ids["image_ids"], ids["caption_ids"])
  else:
    if coco_ids:
      raise ValueError(f"--coco_ids needs the 5000-image COCO test split; "
                       f"{split_name!r} has {split.num_images} images.")
    report["full"] = evaluate.retrieval_report(
        image_emb, caption_emb, captions_per_image=split.captions_per_image,
        rsc_relevance=evaluate.split_relevance(split),
        true_relevance=split.true_relevance, ndcg_k=config.eval.ndcg_k, ties=ties)
  if write:
    write_report(workdir, report)
  return report


def write_report(workdir: str, report: dict) -> str:
  """Writes `report` to <workdir>/eval_<split>.json (atomically); returns the path."""
  path = os.path.join(workdir, f"eval_{report['split']}.json")
  integrity.atomic_write_text(path, json.dumps(report, indent=2))
  return path


def format_report(report: dict) -> str:
  lines = [f"checkpoint step {report['checkpoint_step']}, split "
           f"{report['split']!r} ({report['num_images']} images)"]
  for protocol, values in report.items():
    if isinstance(values, dict):
      lines.append(f"  [{protocol}]")
      lines.extend(f"    {k:<18} {v:8.3f}" for k, v in values.items())
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  report = evaluate_run(_WORKDIR.value, _SPLIT.value, _CHECKPOINT.value,
                        _COCO_IDS.value, write=False)
  # Printed first: a read-only workdir must not lose the results.
  print(format_report(report), flush=True)
  try:
    write_report(_WORKDIR.value, report)
  except OSError as e:
    raise OSError(e.errno, f"The results above could not be saved to "
                  f"{_WORKDIR.value!r} ({e.strerror}); copy them from this "
                  "output", e.filename) from e


if __name__ == "__main__":
  errors.run(main)
