r"""Evaluate a trained run on a split.

  python -m itr_jax.evaluate --workdir=workdirs/demo [--split=test] \
      [--checkpoint=best|latest|<step>] [--data_dir=DIR] [--protocol=auto|full|coco] \
      [--coco_ids=ids.npz] [--save_sims] [--save_embeddings] [--ensemble=OTHER_RUN] \
      [--config.eval.ndcg_k=10 ...]

Reports R@1/5/10, medr, meanr both ways and RSUM, plus NDCG with RSC relevance
(and ground-truth relevance on synthetic scenes).

Protocols: `full` scores the whole split; `coco` reports the 5-fold 1K
protocol (each fold and their mean) and the 5K protocol (the whole split);
`auto` (default) is `coco` for a 5000-image split (MS-COCO `testall`), else
`full`. With --coco_ids (an .npz with `image_ids` [5000] and `caption_ids`
[25000], the COCO ids of the split's rows and captions; written by
`python -m itr_jax.tools.coco_ids`) ECCV Caption metrics follow.

--data_dir evaluates on another copy of the data or another dataset in the
same format; --config.<field>=<value> overrides the run's `eval.*` and
`data.*` settings (e.g. --config.eval.ndcg_k=10). A run's synthetic dataset
is never regenerated here: it must exist.

Outputs in the workdir, named `eval_<split>[_step<N>][_<tag>]`: `_step<N>`
for any checkpoint but the best (so the best's `eval_<split>.json` is never
overwritten), `_<tag>` when --data_dir, --config overrides, --ensemble or a
non-default --protocol are given.
  .json              the report (also printed)
  _sims.npy          --save_sims: float32 [N_images, N_captions] cosine
                     similarities; row i = image i of the split, column c =
                     caption c (line c of {split}_caps.txt), which describes
                     image c // captions_per_image
  _image_emb.npy, _caption_emb.npy
                     --save_embeddings: float32 L2-normalised embeddings in
                     the same row orders; sims = image_emb @ caption_emb.T
With --ensemble (a workdir of another run on the same data, e.g. an SAF run
for an SGR one; repeat the flag for more) the score matrices of all runs are
averaged: the SGRAF ensemble. Every member is opened and checked before any
scoring; members evaluated on other data (compared by content: captions and
image features, not only their number) are refused, naming what differs.
Outputs are tagged `_ensemble-<member folder names>-<hash of their absolute
paths>`; the report lists each member (absolute path, step, kind of score,
its own metrics) and notes when the members' scores have different scales
(SGRAF sigmoids with VSE cosines). A protocol other than the split's default
(--protocol=full on the COCO 5K split) tags the outputs `_protocol-full`.

Damaged checkpoints are skipped (nothing on disk is changed); results are
printed before anything is written, so a read-only workdir loses nothing;
the image embeddings of a split of raw images are cached in <workdir>/cache
(config.data.embedding_cache) per image tower, preprocessing and images, so
evaluating a checkpoint again (another protocol, --save_sims) or another
checkpoint with the same image tower (LiT) does not re-encode them;
errors print one sentence (the traceback with --verbose).
"""
from __future__ import annotations

import hashlib
import json
import os
import re

from absl import flags
from ml_collections import config_flags
import numpy as np

from itr_jax import filesystem as fs
from itr_jax import cli
from itr_jax import metrics  # light (NumPy only); a package cannot be lazy_import-ed
from itr_jax.training import defaults
from itr_jax.training import workdir as workdir_lib

# Imported on first use, so that --help and flag errors answer at once.
embedding_cache = cli.lazy_import("itr_jax.evaluation.embedding_cache")
evaluate = cli.lazy_import("itr_jax.evaluation.evaluate")
runs = cli.lazy_import("itr_jax.evaluation.runs")
similarity = cli.lazy_import("itr_jax.evaluation.similarity")
integrity = cli.lazy_import("itr_jax.training.integrity")
reporting = cli.lazy_import("itr_jax.training.reporting")

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by itr_jax.train.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.data.test_split).")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "best", "'best' (by dev RSUM), 'latest', or a step number.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Evaluate on the dataset in this folder instead of the "
    "run's config.data.data_dir (another copy, or another dataset in the same "
    "precomputed format).")
_PROTOCOL = flags.DEFINE_enum(
    "protocol", "auto", ["auto", "full", "coco"],
    "full: the whole split; coco: 5-fold 1K (each fold + mean) and 5K (only "
    "the 5000-image COCO test split); auto: coco for 5000 images, else full.")
_COCO_IDS = flags.DEFINE_string(
    "coco_ids", None, "Optional .npz with COCO `image_ids` and `caption_ids` "
    "for the split's rows/columns (python -m itr_jax.tools.coco_ids): adds "
    "ECCV Caption metrics; needs the coco protocol.")
_SAVE_SIMS = flags.DEFINE_bool(
    "save_sims", False, "Write the similarity matrix, float32 [N_images, "
    "N_captions] in split order, to <output>_sims.npy.")
_SAVE_EMBEDDINGS = flags.DEFINE_bool(
    "save_embeddings", False, "Write <output>_image_emb.npy and "
    "<output>_caption_emb.npy (float32, split order).")
# Repeated, not comma-separated: sweep member directories contain commas.
_ENSEMBLE = flags.DEFINE_multi_string(
    "ensemble", [], "Workdir of a further run on the same data whose score "
    "matrix is averaged with this one's (SGRAF: --workdir=SGR --ensemble=SAF); "
    "repeat the flag for more runs.")
flags.mark_flags_as_required(["workdir"])

COCO_5K_IMAGES = 5000
PROTOCOLS = ("auto", "full", "coco")
MAX_IDS_BYTES = 64 << 20  # itr-coco-ids writes 30,000 ids (~250 KB)


def output_stem(workdir: str, split_name: str, step: int, *, best: bool,
                tag: str = "") -> str:
  """`<workdir>/eval_<split>[_step<N>][_<tag>]` (see the module docstring).

  >>> output_stem("w", "test", 702, best=True)
  'w/eval_test'
  >>> output_stem("w", "test", 400, best=False, tag="data-f30k")
  'w/eval_test_step400_data-f30k'
  """
  name = f"eval_{split_name}" + ("" if best else f"_step{step}") + (f"_{tag}" if tag else "")
  return fs.join(workdir, name)


def run_tag(recorded_data_dir: str, data_dir: str | None, overrides: dict | None) -> str:
  """A file-name tag for an evaluation that differs from the run's own.

  >>> run_tag("/d/a", None, None)
  ''
  >>> run_tag("/d/a", "/e/f30k_precomp", None)
  'data-f30k_precomp'
  """
  parts = []
  if data_dir and fs.absolute(data_dir) != fs.absolute(recorded_data_dir):
    base = fs.basename(data_dir if fs.is_remote(data_dir) else os.path.normpath(data_dir))
    parts.append("data-" + re.sub(r"[^A-Za-z0-9_.-]", "_", base))
  if overrides:
    digest = hashlib.sha256(json.dumps(sorted(overrides.items()), default=str)
                            .encode()).hexdigest()[:8]
    parts.append(f"cfg-{digest}")
  return "_".join(parts)


def resolve_protocol(protocol: str, num_images: int) -> str:
  """'full' or 'coco'; `auto` picks coco for the 5000-image COCO test split.

  coco (five 1K folds and the 5K whole) is refused on any other split: its
  numbers would be labelled COCO 1K/5K without being them.

  >>> resolve_protocol("auto", 5000), resolve_protocol("auto", 1000)
  ('coco', 'full')
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
  if protocol == "auto":
    return "coco" if num_images == COCO_5K_IMAGES else "full"
  if protocol == "coco" and num_images != COCO_5K_IMAGES:
    raise ValueError(f"--protocol=coco (COCO 1K folds and 5K) needs the "
                     f"{COCO_5K_IMAGES}-image COCO test split; this split has "
                     f"{num_images} images. Use --protocol=full (the default here).")
  return protocol


def protocol_tag(protocol: str, num_images: int) -> str:
  """File-name tag of a protocol other than the split's default, so results
  of different protocols never overwrite each other.

  >>> protocol_tag("full", 5000), protocol_tag("full", 1000), protocol_tag("auto", 5000)
  ('protocol-full', '', '')
  """
  chosen = resolve_protocol(protocol, num_images)
  return "" if chosen == resolve_protocol("auto", num_images) else f"protocol-{chosen}"


def split_fingerprint(split) -> str:
  """sha256 of a split's captions, shape and image features: equal for the
  same data wherever it is stored, different for two datasets of one size."""
  digest = hashlib.sha256()
  digest.update(repr((split.num_images, split.num_captions,
                      split.captions_per_image)).encode())
  for caption in split.captions:
    digest.update(caption.encode("utf-8") + b"\n")
  images = np.asarray(split.images)
  digest.update(repr((images.shape, images.dtype.str)).encode())
  for start in range(0, images.shape[0], 256):  # bounded memory for memmaps
    digest.update(np.ascontiguousarray(images[start:start + 256]).tobytes())
  return digest.hexdigest()


def data_difference(a, b) -> str | None:
  """What differs between the evaluation data of splits `a` and `b` (None: the same)."""
  if (a.num_images, a.num_captions) != (b.num_images, b.num_captions):
    return (f"{a.num_images} images / {a.num_captions} captions vs "
            f"{b.num_images} / {b.num_captions}")
  for i, (x, y) in enumerate(zip(a.captions, b.captions)):
    if x != y:
      return f"caption {i} differs: {x[:60]!r} vs {y[:60]!r}"
  if split_fingerprint(a) != split_fingerprint(b):
    return "the image features differ (same captions)"
  return None


def score_scale(model) -> str:
  """What a model's scores are: averaging different kinds mixes scales."""
  from itr_jax.models import scorer  # pylint: disable=import-outside-toplevel
  if scorer.is_two_tower(model):
    return "cosine similarity in [-1, 1]"
  return "cross-attention score (sigmoid, in (0, 1))"


def ensemble_tag(workdirs) -> str:
  """File-name tag naming the ensembled runs (their folder names and a hash
  of their absolute paths, so two ensembles never share a file).

  >>> ensemble_tag(["/r/sgr", "/r/saf"])[:17]
  'ensemble-sgr+saf-'
  """
  names = "+".join(re.sub(r"[^A-Za-z0-9_.=-]", "_", fs.basename(w.rstrip("/")))
                   for w in workdirs)[:80]
  digest = hashlib.sha256("\n".join(fs.absolute(w) for w in workdirs).encode())
  return f"ensemble-{names}-{digest.hexdigest()[:8]}"


def read_coco_ids(path: str, protocol: str, run: runs.LoadedRun) -> dict:
  """{"image_ids", "caption_ids"} of the --coco_ids file `path`, checked
  against the split and its protocol before anything is scored."""
  split = run.split
  if resolve_protocol(protocol, split.num_images) != "coco":
    raise ValueError(f"--coco_ids needs the coco protocol (the 5000-image COCO "
                     f"test split); {run.split_name!r} has {split.num_images} "
                     "images and is evaluated with protocol 'full'.")
  ids = fs.read_npz(path, MAX_IDS_BYTES, what="--coco_ids file")
  if not {"image_ids", "caption_ids"} <= ids.keys():
    raise ValueError(f"--coco_ids file {path!r} has no image_ids and caption_ids "
                     "arrays; make it with itr-coco-ids.")
  return ids


def score(run: runs.LoadedRun, sims, *, protocol: str = "auto",
          coco_ids: dict | None = None) -> dict:
  """The report dict of the score matrix `sims` [N_images, N_captions] of
  `run.split`; `coco_ids` (from `read_coco_ids`) adds ECCV Caption metrics."""
  split, config = run.split, run.config
  protocol = resolve_protocol(protocol, split.num_images)
  ties = evaluate.eval_ties(config)
  report = {"checkpoint_step": run.step, "split": run.split_name,
            "num_images": split.num_images, "data_dir": run.data_dir,
            "protocol": protocol}
  sims = np.asarray(sims)
  whole = evaluate.sims_report(
      sims, captions_per_image=split.captions_per_image,
      rsc_relevance=evaluate.split_relevance(split),
      true_relevance=split.true_relevance, ndcg_k=config.eval.ndcg_k, ties=ties)
  if protocol == "coco":
    folds = metrics.coco_1k_folds(sims, captions_per_image=split.captions_per_image,
                                  ties=ties)
    report["coco_1k"] = {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}
    report["coco_1k_folds"] = folds
    report["coco_5k"] = whole
    if coco_ids:
      report["eccv"] = metrics.eccv_caption_metrics(sims, coco_ids["image_ids"],
                                                    coco_ids["caption_ids"])
  else:
    report["full"] = whole
  return report


def evaluate_run(workdir: str, split_name: str | None = None, which: str = "best",
                 coco_ids: str | None = None, *, data_dir: str | None = None,
                 protocol: str = "auto", overrides: dict | None = None,
                 save_sims: bool = False, save_embeddings: bool = False,
                 ensemble: tuple[str, ...] = (), write: bool = True,
                 echo: bool = False) -> dict:
  """Evaluates checkpoint `which` of `workdir`; returns the report.

  `ensemble`: workdirs of further runs on the same data whose score matrices
  are averaged with this one's (the SGRAF ensemble). `echo` prints the report
  before anything is written; `write` writes it (and the requested arrays)
  into the workdir.
  """
  recorded_data_dir = workdir_lib.load_config(workdir).data.data_dir
  for other in ensemble:  # a mistyped member fails before anything is loaded
    workdir_lib.load_config(other)
  run = runs.load_run(workdir, split_name, which, data_dir=data_dir, overrides=overrides)
  resolve_protocol(protocol, run.split.num_images)  # fail before encoding
  ids = read_coco_ids(coco_ids, protocol, run) if coco_ids else None
  from itr_jax.models import scorer  # pylint: disable=import-outside-toplevel
  two_tower = scorer.is_two_tower(run.model)
  if save_embeddings and not two_tower:
    raise ValueError(f"--save_embeddings needs a two-tower model; {workdir!r} is a "
                     f"cross-attention scorer ({run.config.model.name}): use --save_sims.")
  # Every member is opened and checked before any scoring (hours for SGRAF).
  others = [runs.load_run(other, run.split_name, which, data_dir=data_dir,
                          overrides=overrides) for other in ensemble]
  for other, other_run in zip(ensemble, others):
    difference = data_difference(run.split, other_run.split)
    if difference:
      raise ValueError(
          f"--ensemble run {other!r} evaluates other data than {workdir!r} "
          f"(split {run.split_name!r} of {other_run.data_dir} vs {run.data_dir}: "
          f"{difference}); ensemble runs evaluated on the same data.")
  image_emb = caption_emb = None
  if two_tower:
    # Images of a split of raw images are encoded once per image tower:
    # evaluating another checkpoint with the same tower reuses them.
    image_emb, caption_emb = evaluate.encode_eval_split(
        run.model, run.params, run.split, run.vocab, run.config, progress=True,
        cache_dir=embedding_cache.eval_cache_dir(run.config, workdir) if write else None)
    sims = image_emb @ caption_emb.T
  else:
    sims = evaluate.split_similarity(run.model, run.params, run.split, run.vocab,
                                     run.config)
  tag = "_".join(t for t in (run_tag(recorded_data_dir, data_dir, overrides),
                             protocol_tag(protocol, run.split.num_images)) if t)
  members = []
  if ensemble:
    member_sims = [sims] + [evaluate.split_similarity(o.model, o.params, o.split, o.vocab,
                                                      o.config) for o in others]
    for path, member_run, own in zip((workdir, *ensemble), (run, *others), member_sims):
      own_report = score(member_run, own, protocol=protocol)
      members.append({"workdir": fs.absolute(path), "checkpoint_step": member_run.step,
                      "model": member_run.config.model.name,
                      "scores": score_scale(member_run.model),
                      "metrics": own_report.get("full") or own_report.get("coco_5k")})
    sims = similarity.ensemble(*member_sims)
    tag = "_".join(t for t in (tag, ensemble_tag(ensemble)) if t)
  report = score(run, sims, protocol=protocol, coco_ids=ids)
  if ensemble:
    scales = sorted({m["scores"] for m in members})
    report["ensemble"] = {"members": members, "mixed_scales": len(scales) > 1}
  stem = output_stem(workdir, run.split_name, run.step, best=which == "best", tag=tag)
  report["overrides"] = dict(overrides or {})
  arrays = {}
  if save_sims:
    arrays[stem + "_sims.npy"] = sims
  if save_embeddings:
    arrays[stem + "_image_emb.npy"] = image_emb
    arrays[stem + "_caption_emb.npy"] = caption_emb
  report["files"] = {"report": stem + ".json",
                     **{fs.basename(f)[len(fs.basename(stem)) + 1:-4]: f
                        for f in arrays}}
  if echo:
    # Printed first, without the files: a read-only workdir must not lose the
    # results, and nothing is announced as written before it is.
    print(format_report({k: v for k, v in report.items() if k != "files"}), flush=True)
  if write:
    saved = []
    try:
      _write_outputs(workdir, run, stem, report, arrays, saved)
    except OSError as e:
      missing = [f for f in report["files"].values() if f not in saved]
      raise OSError(e.errno, "The results" + (" above" if echo else "") +
                    f" could not be saved to {workdir!r} ({e.strerror}); not saved: "
                    + ", ".join(missing) + (f" (saved: {', '.join(saved)})" if saved else "")
                    + ("; copy the numbers from this output" if echo else ""),
                    e.filename) from e
    if echo:
      print("  written: " + ", ".join(report["files"].values()), flush=True)
  return report


def _write_outputs(workdir: str, run, stem: str, report: dict, arrays: dict,
                   saved: list) -> None:
  """Writes the arrays, then the report; appends each path written to `saved`."""
  for path, array in arrays.items():
    with fs.open(path, "wb") as f:
      np.save(f, np.asarray(array, np.float32))
    saved.append(path)
  integrity.atomic_write_text(stem + ".json", json.dumps(report, indent=2))
  saved.append(stem + ".json")
  if stem == output_stem(workdir, run.split_name, run.step, best=True):
    # The run's own result: beside its training curves in TensorBoard.
    log = reporting.MetricsLog(workdir)
    for protocol, values in report.items():
      if protocol in ("coco_1k", "coco_5k", "full", "eccv") and isinstance(values, dict):
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        log.write(run.step, f"{run.split_name}/{protocol}", numbers, jsonl=False)
    log.close()
  return report


def format_report(report: dict) -> str:
  """The report as console text; COCO 1K folds as one table."""
  lines = [f"checkpoint step {report['checkpoint_step']}, split "
           f"{report['split']!r} ({report['num_images']} images), protocol "
           f"{report.get('protocol', 'full')}"]
  ensemble = report.get("ensemble")
  if ensemble:
    lines.append(f"  ensemble of {len(ensemble['members'])} runs (mean of their scores):")
    lines.extend(f"    {m['workdir']} (step {m['checkpoint_step']}, {m['model']}: "
                 f"{m['scores']}): own RSUM {m['metrics']['rsum']:.2f}"
                 for m in ensemble["members"])
    if ensemble.get("mixed_scales"):
      lines.append("    note: the members' scores have different scales ("
                   + "; ".join(sorted({m["scores"] for m in ensemble["members"]}))
                   + "); their mean weights them unequally.")
  for protocol, values in report.items():
    if protocol in ("overrides", "files", "ensemble"):
      continue
    if isinstance(values, dict):
      lines.append(f"  [{protocol}]")
      lines.extend(f"    {k:<18} {v:8.3f}" for k, v in values.items())
  folds = report.get("coco_1k_folds")
  if folds:
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
    lines.append("  [coco_1k per fold]")
    lines.append("    fold   " + " ".join(f"{k:>8}" for k in keys))
    rows = [(str(i), fold) for i, fold in enumerate(folds)] + [("mean", report["coco_1k"])]
    lines.extend(f"    {name:<6} " + " ".join(f"{row[k]:8.2f}" for k in keys)
                 for name, row in rows)
  if report.get("files"):
    lines.append("  written: " + ", ".join(report["files"].values()))
  return "\n".join(lines)


def main(argv):
  evaluate_run(
      _WORKDIR.value, _SPLIT.value, _CHECKPOINT.value, _COCO_IDS.value,
      data_dir=_DATA_DIR.value, protocol=_PROTOCOL.value,
      overrides=config_flags.get_override_values(flags.FLAGS["config"]),
      save_sims=_SAVE_SIMS.value, save_embeddings=_SAVE_EMBEDDINGS.value,
      ensemble=tuple(_ENSEMBLE.value), echo=True)


def _define_config_flag() -> None:
  # Defined when the command runs, inside cli.run's error handling:
  # ml_collections parses the --config.<field> overrides as soon as the flag
  # is defined, and a misspelt field must be one sentence, not a traceback.
  config_flags.DEFINE_config_dict(
      "config", defaults.base_config(),
      "Overrides of the run's eval.* and data.* settings, e.g. "
      "--config.eval.batch_size=512 --config.eval.ndcg_k=10.")


def run():
  """Console-script entry point."""
  cli.run(main, config_fields=True, define=_define_config_flag)


if __name__ == "__main__":
  run()
