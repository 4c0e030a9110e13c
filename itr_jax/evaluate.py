r"""Evaluate a trained run on its test split.

  python -m itr_jax.evaluate --workdir=workdirs/demo [--split=test] \
      [--checkpoint=best|latest|<step>] [--coco_ids=ids.npz] [--ensemble=OTHER_RUN]

Reports R@1/5/10, medr, meanr both ways and RSUM, plus NDCG with RSC relevance
(and ground-truth relevance on synthetic scenes). A 5000-image split (MS-COCO
`testall`) is reported with the 5-fold 1K protocol and the 5K protocol;
with --coco_ids (an .npz with `image_ids` [5000] and `caption_ids` [25000],
the COCO ids of the split's rows and captions) ECCV Caption metrics follow.
With --ensemble (comma-separated workdirs of runs on the same data, e.g.
an SAF run for an SGR one) the score matrices of all runs are averaged: the
SGRAF ensemble. Results are printed and written to
<workdir>/eval_<split>.json (eval_<split>_ensemble.json with --ensemble).
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
from itr_jax.evaluation import similarity
from itr_jax.models import scorer
from itr_jax.training import checkpointing
from itr_jax.training import experiment_data
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
_ENSEMBLE = flags.DEFINE_list(
    "ensemble", [], "Workdirs of further runs on the same data whose score "
    "matrices are averaged with this one's (SGRAF: --workdir=SGR --ensemble=SAF).")
flags.mark_flags_as_required(["workdir"])

COCO_5K_IMAGES = 5000


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
  # Params (two-tower) or params + BatchNorm statistics (cross-attention).
  return scorer.state_variables(state), step


def run_similarity(workdir: str, split_name: str | None, which: str):
  """(config, split, step, scores [N_images, N_captions]) of one run's checkpoint."""
  config = workdir_lib.load_config(workdir)
  split_name = split_name or config.data.test_split
  directory = experiment_data.data_dir(config)
  split = experiment_data.load_split(config, directory, split_name)
  vocab = experiment_data.resolve_tokenizer(config, directory, workdir=workdir)
  model = trainer.build_model(config, len(vocab))
  params, step = restore_params(config, workdir, model, split, which)
  return config, split, step, evaluate.split_similarity(model, params, split, vocab, config)


def evaluate_run(workdir: str, split_name: str | None = None, which: str = "best",
                 coco_ids: str | None = None, ensemble: tuple[str, ...] = ()) -> dict:
  config, split, step, sims = run_similarity(workdir, split_name, which)
  split_name = split_name or config.data.test_split
  report = {"checkpoint_step": step, "split": split_name, "num_images": split.num_images}
  if ensemble:
    # The same split of the same data: every run's own config names it.
    others = [run_similarity(other, split_name, which) for other in ensemble]
    for other, (_, other_split, other_step, _) in zip(ensemble, others):
      if (other_split.num_images, other_split.num_captions) != (split.num_images,
                                                                split.num_captions):
        raise ValueError(f"--ensemble run {other!r} evaluates a different split "
                         f"({other_split.num_images} images) than {workdir!r} "
                         f"({split.num_images}); ensemble runs on the same data.")
    sims = similarity.ensemble(sims, *(o[3] for o in others))
    report["ensemble"] = {w: o[2] for w, o in zip(ensemble, others)}
  if split.num_images == COCO_5K_IMAGES:
    report["coco_1k"] = metrics.coco_1k(sims, captions_per_image=split.captions_per_image)
    report["coco_5k"] = evaluate.sims_report(
        sims, captions_per_image=split.captions_per_image,
        rsc_relevance=evaluate.split_relevance(split),
        true_relevance=split.true_relevance, ndcg_k=config.eval.ndcg_k)
    if coco_ids:
      ids = np.load(coco_ids)
      report["eccv"] = metrics.eccv_caption_metrics(sims, ids["image_ids"], ids["caption_ids"])
  else:
    if coco_ids:
      raise ValueError(f"--coco_ids needs the 5000-image COCO test split; "
                       f"{split_name!r} has {split.num_images} images.")
    report["full"] = evaluate.sims_report(
        sims, captions_per_image=split.captions_per_image,
        rsc_relevance=evaluate.split_relevance(split),
        true_relevance=split.true_relevance, ndcg_k=config.eval.ndcg_k)
  suffix = "_ensemble" if ensemble else ""
  path = os.path.join(workdir, f"eval_{split_name}{suffix}.json")
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
  return report


def format_report(report: dict) -> str:
  lines = [f"checkpoint step {report['checkpoint_step']}, split "
           f"{report['split']!r} ({report['num_images']} images)"]
  for protocol, values in report.items():
    if isinstance(values, dict) and protocol != "ensemble":
      lines.append(f"  [{protocol}]")
      lines.extend(f"    {k:<18} {v:8.3f}" for k, v in values.items())
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  report = evaluate_run(_WORKDIR.value, _SPLIT.value, _CHECKPOINT.value, _COCO_IDS.value,
                        ensemble=tuple(_ENSEMBLE.value))
  print(format_report(report))


if __name__ == "__main__":
  app.run(main)
