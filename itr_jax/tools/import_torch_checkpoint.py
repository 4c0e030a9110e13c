r"""Import an official PyTorch checkpoint (Listwise_ITR/VSE++, VSE-infinity, SGRAF) as a workdir.

  python -m itr_jax.tools.import_torch_checkpoint --checkpoint=model_best.pth.tar \
      --backbone=sgr --vocab=vocab/f30k_precomp_vocab.json --workdir=workdirs/f30k_sgr_official
  python -m itr_jax.evaluate --workdir=workdirs/f30k_sgr_official --data_dir=/data/f30k_precomp

The checkpoint is what the official `train.py` saves (`torch.save` of
`{"model": [img_enc, txt_enc(, sim_enc)] state dicts, "opt": argparse
Namespace, "epoch", "best_rsum", "Eiters"}`) for `--backbone`:

* `vse`: AAA-Zheng/Listwise_ITR (VSE++ + S-NDCG; also VSE++'s own layout);
* `vse_infty`: woodfrog/vse_infty, `bigru` branch, precomputed regions;
* `sgr` / `saf`: Paranioar/SGRAF with `--module_name` SGR / SAF.

It is read without PyTorch by `itr_jax.tools.torch_pickle`, safe on any
bytes (legacy non-zip files need PyTorch >= 2.6, the `[torch]` extra). The official `opt` becomes an itr_jax
config (`config_from_opt`: model sizes, loss and training recipe; an option
itr_jax does not implement, e.g. `--precomp_enc_type=backbone`, is an error
naming it), the weights become the backbone's variables (the mapping
functions of `itr_jax.models.sgraf_weights` / `vse_infty_torch` and
`vse_variables` here), and `--vocab` (the official `*_vocab.json`) is kept
as the workdir's `vocab.json`. The new workdir holds `config.json`,
`vocab.json` and one verified orbax checkpoint (step = the official
`Eiters`), so `itr_jax.evaluate`, `retrieve` and fine-tuning
(`--config.train.init_from=`) use it like a trained run. Its config is the
backbone's official recipe (`config_from_opt`: official loss and reduction,
clipping, schedule, last batch, tie order), so fine-tuning continues it
unless overridden. An existing non-empty `--workdir` is refused: nothing is
overwritten. The workdir is written under a temporary name and renamed into
place, so a failed import leaves nothing behind and can simply be run again.
"""
from __future__ import annotations

import argparse
import os
import types
from typing import Any, Mapping

from absl import flags
import ml_collections
import numpy as np

from itr_jax import cli
from itr_jax import filesystem as fs
from itr_jax.data import vocab as vocab_lib
from itr_jax.training import defaults
from itr_jax.training import workdir as workdir_lib

# Imported on first use, so that --help and flag errors answer at once.
jax = cli.lazy_import("jax")
ml_dtypes = cli.lazy_import("ml_dtypes")
torch_pickle = cli.lazy_import("itr_jax.tools.torch_pickle")
checkpointing = cli.lazy_import("itr_jax.training.checkpointing")
optimizer_lib = cli.lazy_import("itr_jax.training.optimizer")
trainer = cli.lazy_import("itr_jax.training.trainer")
validation = cli.lazy_import("itr_jax.training.validation")

BACKBONES = ("vse", "vse_infty", "sgr", "saf")
# Official options that only say where files are or how the job ran.
_LOGISTICS = {"data_path", "data_name", "vocab_path", "model_name", "logger_name",
              "workers", "log_step", "val_step", "resume", "text_emb_path",
              "reset_start_epoch", "vocab_size", "logger", "seed"}
# Options each code base may hold, beyond _LOGISTICS (its parser's fields).
_KNOWN = {
    "vse": {"margin", "tau", "num_epochs", "lr_update", "batch_size", "img_dim", "word_dim",
            "embed_size", "optim", "learning_rate", "grad_clip", "sndcg_weight",
            # VSE++ (fartashf/vsepp) fields of the same model
            "max_violation", "num_layers", "measure", "use_abs", "no_imgnorm", "finetune",
            "cnn_type", "use_restval", "crop_size", "reset_train"},
    "vse_infty": {"margin", "num_epochs", "batch_size", "word_dim", "embed_size", "num_layers",
                  "grad_clip", "learning_rate", "lr_update", "optim", "max_violation", "img_dim",
                  "no_imgnorm", "no_txtnorm", "precomp_enc_type", "backbone_path",
                  "backbone_source", "vse_mean_warmup_epochs", "backbone_warmup_epochs",
                  "embedding_warmup_epochs", "backbone_lr_factor", "input_scale_factor", "drop"},
    "sgraf": {"batch_size", "num_epochs", "lr_update", "learning_rate", "grad_clip", "margin",
              "max_violation", "img_dim", "word_dim", "embed_size", "sim_dim", "num_layers",
              "bi_gru", "no_imgnorm", "no_txtnorm", "module_name", "sgr_step"},
}
# Option values itr_jax implements (other values: an error naming them).
_SUPPORTED = {
    "num_layers": (1,), "no_imgnorm": (False,), "no_txtnorm": (False,), "optim": ("adam",),
    "measure": ("cosine",), "use_abs": (False,), "precomp_enc_type": ("basic",),
    "finetune": (False,), "input_scale_factor": (1, 1.0),
}


def _family(backbone: str) -> str:
  return "sgraf" if backbone in ("sgr", "saf") else backbone


def check_opt(opt: Mapping[str, Any], backbone: str) -> None:
  """Raises ValueError naming official options itr_jax cannot reproduce."""
  unknown = sorted(set(opt) - _KNOWN[_family(backbone)] - _LOGISTICS)
  if unknown:
    raise ValueError(
        f"the checkpoint's options {unknown} are not options of the official "
        f"{backbone!r} code that itr_jax knows; is --backbone={backbone} right "
        f"(one of {list(BACKBONES)})?")
  bad = {k: opt[k] for k, ok in _SUPPORTED.items() if k in opt and opt[k] not in ok}
  if bad:
    raise ValueError(
        f"the checkpoint was trained with {bad}, which itr_jax does not implement "
        f"(supported: { {k: _SUPPORTED[k] for k in bad} }).")
  if _family(backbone) == "sgraf":
    module = str(opt.get("module_name", "")).lower()
    if module != backbone:
      raise ValueError(f"the checkpoint is SGRAF's {opt.get('module_name')!r} module; "
                       f"import it with --backbone={module or 'sgr|saf'}.")


def config_from_opt(opt: Mapping[str, Any], backbone: str) -> ml_collections.ConfigDict:
  """The itr_jax config of an official run's options (`vars(checkpoint["opt"])`).

  Model sizes and the training recipe follow the official options and code,
  so that training the imported workdir on (or `train.init_from` it with
  this config) continues the official recipe: the official loss (VSE-infinity
  and SGRAF: the triplet alone, summed over the batch; Listwise_ITR: its
  triplet + S-NDCG mix, averaged; VSE++: the summed triplet), gradient
  clipping on that loss, learning rate and its schedule, last partial batch
  kept or dropped, and evaluation's tie order (`defaults.official_recipe`).
  The vocabulary is the imported one (the workdir's `vocab.json`).
  """
  check_opt(opt, backbone)
  c = defaults.base_config()
  if backbone == "vse_infty":
    defaults.official_recipe(defaults.vse_infty_recipe(c, "gru"), "vse_infty")
    c.loss.weight = 0.0  # lib/loss.py: ContrastiveLoss only
    # Warm-up with the sum over negatives for vse_mean_warmup_epochs (train.py
    # then sets max_violation for good).
    c.train.warmup_epochs = int(opt.get("vse_mean_warmup_epochs", 1))
    if not opt.get("drop", True):
      c.train.augment.caption_tokens = 0.0
  elif backbone in ("sgr", "saf"):
    defaults.sgraf_training(defaults.sgraf_model(c, backbone))
    defaults.official_recipe(c, "sgraf")
    c.loss.weight = 0.0  # model.py: ContrastiveLoss only
    c.model.sim_dim = int(opt["sim_dim"])
    c.model.sgr_steps = int(opt.get("sgr_step", 3))
    c.model.bidirectional = bool(opt.get("bi_gru", True))
    c.train.warmup_epochs = 0 if opt.get("max_violation", True) else int(opt["num_epochs"])
  else:
    listwise = "tau" in opt or "sndcg_weight" in opt  # else VSE++'s own layout
    # VSE++ (fartashf/vsepp) sums its triplet over the batch and keeps the
    # last batch, as SGRAF, whose loss is VSE++'s.
    defaults.official_recipe(c, "listwise_itr" if listwise else "sgraf")
    c.loss.tau = float(opt.get("tau", c.loss.tau))
    c.loss.weight = float(opt.get("sndcg_weight", c.loss.weight)) if listwise else 0.0
    c.train.warmup_epochs = 0 if opt.get("max_violation", True) else int(opt["num_epochs"])
  c.model.embed_size = int(opt["embed_size"])
  c.model.word_dim = int(opt["word_dim"])
  c.loss.margin = float(opt.get("margin", c.loss.margin))
  for field, name, cast in (("optim.learning_rate", "learning_rate", float),
                            ("optim.grad_clip", "grad_clip", float),
                            ("optim.lr_update", "lr_update", int),
                            ("train.batch_size", "batch_size", int),
                            ("train.num_epochs", "num_epochs", int)):
    if name in opt:
      group, leaf = field.split(".")
      c[group][leaf] = cast(opt[name])
  c.train.warmup_epochs = min(c.train.warmup_epochs, c.train.num_epochs)
  c.data.name = "precomputed"
  c.data.test_split = "testall" if str(opt.get("data_name", "")).startswith("coco") else "test"
  return c


def _flat(state, prefixes) -> dict:
  """One {"img_enc.fc.weight": array, ...} dict from the official 'model' entry."""
  if isinstance(state, (list, tuple)):
    if len(state) != len(prefixes):
      raise ValueError(f"the checkpoint's 'model' holds {len(state)} state dicts; this "
                       f"backbone's official model saves {len(prefixes)} ({', '.join(prefixes)})")
    if not all(isinstance(sd, Mapping) for sd in state):
      raise ValueError("the checkpoint's 'model' list holds something other than state dicts")
    flat = {f"{p}.{k}": v for p, sd in zip(prefixes, state) for k, v in sd.items()}
  elif isinstance(state, Mapping) and all(
      isinstance(k, str) and k.split(".")[0] in prefixes for k in state):
    flat = dict(state)
  else:
    raise ValueError("the checkpoint's 'model' is neither a list of state dicts nor one "
                     f"state dict with keys prefixed {prefixes}")
  bad = sorted(str(k) for k, v in flat.items()
               if not (isinstance(v, np.ndarray)
                       and (v.dtype.kind in "biuf" or v.dtype == ml_dtypes.bfloat16)))
  if bad:
    raise ValueError(f"the checkpoint's weights {bad[:4]} are not numeric tensors")
  return flat


def _sub(state: Mapping[str, np.ndarray], prefix: str) -> dict:
  return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def vse_variables(state: Mapping[str, np.ndarray]) -> dict:
  """`VSEModel` (VSE++) variables from Listwise_ITR's `img_enc.` / `txt_enc.` weights.

  >>> w = {"img_enc.fc.weight": np.ones((4, 3)), "img_enc.fc.bias": np.zeros(4),
  ...      "txt_enc.embed.weight": np.ones((9, 2)),
  ...      "txt_enc.rnn.weight_ih_l0": np.ones((12, 2)), "txt_enc.rnn.bias_ih_l0": np.zeros(12),
  ...      "txt_enc.rnn.weight_hh_l0": np.ones((12, 4)), "txt_enc.rnn.bias_hh_l0": np.zeros(12)}
  >>> vse_variables(w)["params"]["image_encoder"]["fc"]["kernel"].shape
  (3, 4)
  """
  from itr_jax.models import sgraf_weights, vse_infty_torch  # pylint: disable=import-outside-toplevel
  img, txt = _sub(state, "img_enc."), _sub(state, "txt_enc.")
  bidirectional = "rnn.weight_ih_l0_reverse" in txt
  return {"params": {
      "image_encoder": {"fc": sgraf_weights.dense(_sub(img, "fc."))},
      "text_encoder": {"embed": {"embedding": np.asarray(txt["embed.weight"], np.float32)},
                       "gru": vse_infty_torch.gru(txt, "rnn.", bidirectional)}}}


def variables_from_state(state, backbone: str) -> dict:
  """`{"params", ...}` of the itr_jax backbone from the official 'model' entry."""
  from itr_jax.models import sgraf_weights, vse_infty_torch  # pylint: disable=import-outside-toplevel
  if backbone == "vse":
    return vse_variables(_flat(state, ("img_enc", "txt_enc")))
  if backbone == "vse_infty":
    flat = _flat(state, ("img_enc", "txt_enc"))
    return vse_infty_torch.variables(_sub(flat, "img_enc."), _sub(flat, "txt_enc."))
  return sgraf_weights.variables_from_torch(_flat(state, ("img_enc", "txt_enc", "sim_enc")),
                                            backbone)


def _compare(fresh, imported, what: str) -> None:
  """Raises ValueError listing leaves whose presence or shape differ."""
  a = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(fresh)}
  b = {jax.tree_util.keystr(p): np.shape(x)
       for p, x in jax.tree_util.tree_leaves_with_path(imported)}
  problems = [f"{k}: missing" for k in sorted(set(a) - set(b))]
  problems += [f"{k}: unexpected" for k in sorted(set(b) - set(a))]
  problems += [f"{k}: shape {b[k]}, expected {a[k]}" for k in sorted(set(a) & set(b))
               if a[k] != b[k]]
  if problems:
    raise ValueError(f"the imported {what} do not fit the itr_jax model built from the "
                     f"checkpoint's options: {'; '.join(problems[:8])}"
                     + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""))


def _num_regions(variables: dict) -> int:
  """Regions per image the model is built for: SGRAF's visual BatchNorm fixes it."""
  stats = variables.get("batch_stats", {}).get("v_global_w", {})
  return int(np.shape(stats["bn_local"]["mean"])[0]) if stats else 36


def import_checkpoint(checkpoint: str, backbone: str, vocab_path: str, workdir: str, *,
                      data_dir: str = "") -> dict:
  """Writes `workdir` from an official checkpoint; returns a summary dict.

  Nothing is written until the checkpoint, options, vocabulary and weights
  all check out; an existing non-empty `workdir` is refused.
  """
  if backbone not in BACKBONES:
    raise ValueError(f"--backbone must be one of {list(BACKBONES)}, got {backbone!r}.")
  validation.check_workdir(workdir)
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise ValueError(f"--workdir {workdir!r} is not empty; give a new directory "
                     "(nothing is overwritten).")
  if not os.path.isfile(checkpoint):
    raise ValueError(f"--checkpoint {checkpoint!r} is not a file.")
  ckpt = torch_pickle.load(checkpoint)  # CheckpointError: one sentence naming the file
  if not isinstance(ckpt, Mapping) or "model" not in ckpt or "opt" not in ckpt:
    raise ValueError(f"--checkpoint {checkpoint!r} is not an official training "
                     "checkpoint (a dict with 'model' and 'opt', as train.py saves).")
  try:
    return _import(ckpt, checkpoint, backbone, vocab_path, workdir, data_dir)
  except (KeyError, TypeError, AttributeError, IndexError, OverflowError) as e:
    # A field of the wrong kind or missing: the file is not what train.py saves.
    raise ValueError(f"--checkpoint {checkpoint!r} does not hold what the official "
                     f"{backbone!r} train.py saves ({type(e).__name__}: "
                     f"{str(e)[:200]}).") from e


def _import(ckpt, checkpoint, backbone, vocab_path, workdir, data_dir) -> dict:
  """`import_checkpoint` once the file is read: check everything, then write."""
  opt = ckpt["opt"]
  if isinstance(opt, (argparse.Namespace, types.SimpleNamespace)):
    opt = vars(opt)
  if not isinstance(opt, Mapping):
    raise ValueError(f"--checkpoint {checkpoint!r} has an 'opt' that is neither an "
                     "argparse.Namespace nor a dict of options.")
  opt = dict(opt)
  config = config_from_opt(opt, backbone)
  if data_dir:
    config.data.data_dir = fs.absolute(data_dir)
  validation.check_config(config)
  vocab = vocab_lib.Vocabulary.load(vocab_path)
  variables = variables_from_state(ckpt["model"], backbone)
  embed = variables["params"].get("text_encoder", variables["params"]).get("embed")
  rows = int(np.shape(embed["embedding"])[0])
  extra_ids = rows - len(vocab)  # VSE-infinity's train.py adds '<mask>' after the vocab
  if extra_ids != int(trainer.masks_words(config)):
    raise ValueError(f"--vocab {vocab_path!r} has {len(vocab)} words but the checkpoint's "
                     f"word embedding has {rows} rows; give the vocabulary the model was "
                     "trained with.")
  config.model.vocab_size = rows
  model = trainer.build_model(config, len(vocab))
  tx = optimizer_lib.create_optimizer(config.optim, steps_per_epoch=1)
  regions, feature_dim = _num_regions(variables), int(opt.get("img_dim", 2048))
  split_shape = types.SimpleNamespace(num_regions=regions, feature_dim=feature_dim,
                                      image_input_shape=(regions, feature_dim))
  state = trainer.create_train_state(config, model, tx, split_shape)
  fresh = state.variables()
  _compare(fresh, variables, "weights")
  variables = jax.tree.map(lambda new, old: np.asarray(new, np.asarray(old).dtype),
                           variables, fresh)
  state = state.replace(params=variables.pop("params"), model_state=variables)

  for key in ("Eiters", "epoch", "best_rsum"):
    value = ckpt.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)) or not np.isfinite(value)):
      raise ValueError(f"--checkpoint {checkpoint!r} has a {key!r} that is not a number.")
  step = int(ckpt.get("Eiters") or 0)
  if not 0 <= step < 2**62:
    raise ValueError(f"--checkpoint {checkpoint!r} has Eiters={step}, not a step number.")
  info = {"imported_from": os.path.abspath(checkpoint), "backbone": backbone,
          "official_epoch": _plain(ckpt.get("epoch")),
          "official_best_rsum": _plain(ckpt.get("best_rsum"))}
  _write(workdir, config, vocab, state, step, info)
  return {**info, "workdir": os.path.abspath(workdir), "step": step}


def _write(workdir: str, config, vocab, state, step: int, info: dict) -> None:
  """Writes the workdir as `workdir_lib.write_new` does: all or nothing."""

  def write(staging: str) -> None:
    workdir_lib.prepare(staging, config)
    vocab.save(os.path.join(staging, "vocab.json"))
    checkpoints = checkpointing.Checkpoints(staging, keep=config.train.keep_checkpoints)
    try:
      checkpoints.save(step, state, extra=info)
    finally:
      checkpoints.close()

  workdir_lib.write_new(workdir, write)


def _plain(value):
  """A JSON-friendly copy of a NumPy scalar (or None)."""
  return value.item() if isinstance(value, np.generic) else value


def _define_flags() -> dict:
  """The command's flags. Defined only when run as a command: this module is
  also a library, imported beside itr_jax.evaluate (which has --checkpoint)."""
  return {
      "checkpoint": flags.DEFINE_string("checkpoint", None, "The official model_best.pth.tar."),
      "backbone": flags.DEFINE_enum("backbone", None, BACKBONES,
                                    "Which official code saved it: vse (Listwise_ITR/VSE++), "
                                    "vse_infty (VSE-infinity bigru), sgr / saf (SGRAF)."),
      "vocab": flags.DEFINE_string("vocab", None,
                                   "The official vocabulary JSON it was trained with."),
      "workdir": flags.DEFINE_string("workdir", None, "New (empty or missing) workdir to write."),
      "data_dir": flags.DEFINE_string("data_dir", "", "Recorded as config.data.data_dir "
                                      "(optional; `itr_jax.evaluate --data_dir` can give it "
                                      "later)."),
  }


def run():
  """Console-script entry point."""
  values = _define_flags()

  def main(argv):
    v = cli.flag_values(argv, values, required=("checkpoint", "backbone", "vocab", "workdir"))
    info = import_checkpoint(v["checkpoint"], v["backbone"], v["vocab"], v["workdir"],
                             data_dir=v["data_dir"])
    print(f"Imported {info['backbone']} checkpoint (official epoch {info['official_epoch']}, "
          f"best_rsum {info['official_best_rsum']}) as step {info['step']} of "
          f"{info['workdir']}; evaluate it with: python -m itr_jax.evaluate "
          f"--workdir={info['workdir']}" + ("" if v["data_dir"] else " --data_dir=DATA_DIR"))

  cli.run(main)


if __name__ == "__main__":
  run()
