r"""Import published CLIP / SigLIP weights as an itr_jax workdir.

  python -m itr_jax.tools.import_dual_encoder --checkpoint=clip-vit-base-patch16/ \
      --workdir=workdirs/clip_b16
  python -m itr_jax.tools.import_dual_encoder --checkpoint=ViT-B-16.pt \
      --tokenizer=bpe_simple_vocab_16e6.txt.gz --workdir=workdirs/clip_b16_openai
  python -m itr_jax.tools.import_dual_encoder --checkpoint=webli_en_b16_224.npz \
      --tokenizer=c4_en.model --workdir=workdirs/siglip_b16

`--checkpoint` (format from its form, or `--format`):

* a Hugging Face directory (``config.json`` + ``model.safetensors`` of a
  `CLIPModel` / `SiglipModel`; its tokenizer files are taken from it);
* an OpenAI / open_clip ViT state dict: a ``torch.save`` zip (``.pt``,
  ``.bin``, ``.pth``; read by `itr_jax.tools.torch_pickle`, nothing in it is
  executed) or a ``.safetensors`` file;
* a big_vision SigLIP ``.npz``.

The architecture comes from the array shapes (plus the source's config or
convention for head counts, activation and image normalisation), the
weights are checked against the model it implies (each mismatch one
sentence), the tokenizer files are copied into ``<workdir>/tokenizer``, and
the workdir gets ``config.json`` and one verified checkpoint (step 0), so
``itr_jax.evaluate``, ``retrieve`` and ``--config.train.init_from`` use it
like a trained run. Nothing is written until everything checks out; a
non-empty `--workdir` is refused.
"""
from __future__ import annotations

import os
import shutil
import types
import zipfile

from absl import flags
import ml_collections
import numpy as np

from itr_jax import cli
from itr_jax import filesystem as fs
from itr_jax.training import defaults
from itr_jax.training import workdir as workdir_lib

# JAX, Flax and the readers are imported in the functions that use them, so
# that --help and flag errors answer at once.

FORMATS = ("auto", "hf", "openai", "big_vision")
MAX_CONFIG_BYTES = 1 << 20
MAX_CHECKPOINT_BYTES = 32 << 30  # SigLIP So400m/14 in float32 is ~4.5 GB


def _safetensors(path):
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  try:
    return safetensors.numpy.load_file(path)
  except Exception as e:  # safetensors raises its own error types  # pylint: disable=broad-except
    raise ValueError(f"cannot read {path!r} as safetensors: {e}") from None


def _format(path: str) -> str:
  if os.path.isdir(path):
    return "hf"
  if path.endswith(".npz"):
    return "big_vision"
  if path.endswith(".safetensors"):
    return "openai"
  if zipfile.is_zipfile(path):
    return "openai"
  raise ValueError(f"cannot tell the format of --checkpoint {path!r}; give --format "
                   f"(one of {FORMATS[1:]}).")


def read_checkpoint(path: str, fmt: str = "auto", *, vision_heads: int = 0,
                    text_heads: int = 0, act: str = "quick_gelu", image_size: int = 0):
  """(arch fields, params, tokenizer path or '') of a published checkpoint."""
  from itr_jax.models import dual_encoder_weights as weights_lib  # pylint: disable=import-outside-toplevel
  if fmt not in FORMATS:
    raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}.")
  if not os.path.exists(path):
    raise ValueError(f"--checkpoint {path!r} does not exist.")
  fmt = _format(path) if fmt == "auto" else fmt
  if fmt == "hf":
    config_path = os.path.join(path, "config.json")
    weights_path = os.path.join(path, "model.safetensors")
    for p in (config_path, weights_path):
      if not os.path.isfile(p):
        raise ValueError(f"the Hugging Face directory {path!r} has no {os.path.basename(p)}.")
    config = fs.read_json(config_path, MAX_CONFIG_BYTES, what="model config")
    arch, params = weights_lib.from_hf(_safetensors(weights_path), config)
    return arch, params, path
  if fmt == "big_vision":
    weights = fs.read_npz(path, MAX_CHECKPOINT_BYTES, what="--checkpoint")
    arch, params = weights_lib.from_big_vision(weights, image_size=image_size)
    return arch, params, ""
  if path.endswith(".safetensors"):
    weights = _safetensors(path)
  else:
    try:
      from itr_jax.tools import torch_pickle  # pylint: disable=import-outside-toplevel
      weights = torch_pickle.load(path)
    except (OSError, EOFError, ValueError, TypeError, KeyError) as e:
      raise ValueError(f"cannot read --checkpoint {path!r}: {e}") from None
    if isinstance(weights, dict) and isinstance(weights.get("state_dict"), dict):
      weights = weights["state_dict"]  # open_clip training checkpoints
    if not isinstance(weights, dict):
      raise ValueError(f"--checkpoint {path!r} holds a {type(weights).__name__}, not a "
                       "state dict.")
  arch, params = weights_lib.from_openai(weights, vision_heads=vision_heads,
                                         text_heads=text_heads, act=act)
  if image_size:
    arch["image_size"] = image_size
  return arch, params, ""


def _variant(arch: dict) -> str:
  """The published variant these sizes are (for the record), else 'tiny'."""
  from itr_jax.models import dual_encoder  # pylint: disable=import-outside-toplevel
  for (family, name), fields in dual_encoder.VARIANTS.items():
    if family == arch["family"] and name != "tiny" and all(
        arch[k] == v for k, v in fields.items() if k not in ("mean", "std", "pad_id")):
      return name
  return "tiny"


def _tokenizer_files(path: str, family: str) -> list[str]:
  if os.path.isdir(path):
    names = ["vocab.json", "merges.txt"] if family == "clip" else ["spiece.model"]
    return [os.path.join(path, n) for n in names]
  return [path]


def import_checkpoint(checkpoint: str, workdir: str, *, fmt: str = "auto", tokenizer: str = "",
                      vision_heads: int = 0, text_heads: int = 0, act: str = "quick_gelu",
                      image_size: int = 0, data_dir: str = "", image_root: str = "") -> dict:
  """Writes `workdir` from a published checkpoint; returns a summary dict."""
  # pylint: disable=import-outside-toplevel
  import jax
  from itr_jax.models import dual_encoder_weights as weights_lib
  from itr_jax.text_encoders import clip_tokenizers
  from itr_jax.training import checkpointing, optimizer as optimizer_lib, trainer, validation
  # pylint: enable=import-outside-toplevel
  validation.check_workdir(workdir)
  if os.path.isdir(workdir) and os.listdir(workdir):
    raise ValueError(f"--workdir {workdir!r} is not empty; give a new directory "
                     "(nothing is overwritten).")
  arch, params, own_tokenizer = read_checkpoint(
      checkpoint, fmt, vision_heads=vision_heads, text_heads=text_heads, act=act,
      image_size=image_size)
  tokenizer = tokenizer or own_tokenizer
  if not tokenizer:
    raise ValueError("this checkpoint format carries no tokenizer; give --tokenizer (CLIP: "
                     "bpe_simple_vocab_16e6.txt.gz or a directory with vocab.json + "
                     "merges.txt; SigLIP: the SentencePiece .model file).")
  tok = clip_tokenizers.load_tokenizer(tokenizer, arch["family"], arch["context_length"])
  if tok.vocab_size > arch["vocab_size"]:
    raise ValueError(f"the tokenizer {tokenizer!r} has {tok.vocab_size} tokens but the "
                     f"model's token embedding only {arch['vocab_size']} rows; give the "
                     "tokenizer the checkpoint was trained with.")
  config = defaults.base_config()
  config.model.name, config.model.variant = arch["family"], _variant(arch)
  config.model.arch = ml_collections.ConfigDict(
      {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items() if k != "family"})
  config.model.vocab_size = arch["vocab_size"]
  config.model.tokenizer = os.path.join(os.path.abspath(workdir), "tokenizer")
  # As the CLIP / SigLIP recipes: pixels, captions at the tower's fixed context.
  config.data.name = "images"
  config.data.max_len = config.eval.max_len = arch["context_length"]
  config.data.data_dir, config.data.image_root = fs.absolute(data_dir), fs.absolute(image_root)
  model = trainer.build_model(config, arch["vocab_size"])
  weights_lib.check_fits(params, model, f"--checkpoint {checkpoint!r}")
  tx = optimizer_lib.create_optimizer(config.optim, steps_per_epoch=1)
  # One compiled init instead of op-by-op dispatch (its values are replaced).
  state = jax.jit(lambda: trainer.create_train_state(config, model, tx,
                                                     types.SimpleNamespace()))()
  state = state.replace(params=jax.tree.map(lambda new, old: np.asarray(new, old.dtype),
                                            params, state.params))
  info = {"imported_from": os.path.abspath(checkpoint), "family": arch["family"],
          "variant": config.model.variant}

  def write(staging: str) -> None:
    workdir_lib.prepare(staging, config)
    # config.model.tokenizer names the folder's final place (in `workdir`).
    os.makedirs(os.path.join(staging, "tokenizer"))
    for path in _tokenizer_files(tokenizer, arch["family"]):
      shutil.copy(path, os.path.join(staging, "tokenizer"))
    checkpoints = checkpointing.Checkpoints(staging, keep=config.train.keep_checkpoints)
    try:
      checkpoints.save(0, state, extra=info)
    finally:
      checkpoints.close()

  workdir_lib.write_new(workdir, write)
  return {**info, "workdir": os.path.abspath(workdir), "step": 0}


def _define_flags() -> dict:
  return {
      "checkpoint": flags.DEFINE_string("checkpoint", None, "HF directory, OpenAI/open_clip "
                                        ".pt/.safetensors, or big_vision .npz."),
      "workdir": flags.DEFINE_string("workdir", None, "New (empty or missing) workdir to write."),
      "format": flags.DEFINE_enum("format", "auto", FORMATS, "Checkpoint layout."),
      "tokenizer": flags.DEFINE_string("tokenizer", "", "Tokenizer file(s) (default: the HF "
                                       "directory's own)."),
      "vision_heads": flags.DEFINE_integer("vision_heads", 0, "OpenAI/open_clip: image "
                                           "attention heads (0: width // 64)."),
      "text_heads": flags.DEFINE_integer("text_heads", 0, "OpenAI/open_clip: text attention "
                                         "heads (0: width // 64)."),
      "act": flags.DEFINE_enum("act", "quick_gelu", ["quick_gelu", "gelu"], "OpenAI/open_clip "
                               "MLP activation: quick_gelu (OpenAI, *-quickgelu) or gelu."),
      "image_size": flags.DEFINE_integer("image_size", 0, "Input resolution when the "
                                         "checkpoint does not say (0: patches x patch size)."),
      "data_dir": flags.DEFINE_string("data_dir", "", "Recorded as config.data.data_dir."),
      "image_root": flags.DEFINE_string("image_root", "", "Recorded as "
                                        "config.data.image_root (the files the image "
                                        "lists name)."),
  }


def run():
  """Console-script entry point."""
  values = _define_flags()

  def main(argv):
    v = cli.flag_values(argv, values, required=("checkpoint", "workdir"))
    info = import_checkpoint(v["checkpoint"], v["workdir"], fmt=v["format"],
                             tokenizer=v["tokenizer"], vision_heads=v["vision_heads"],
                             text_heads=v["text_heads"], act=v["act"],
                             image_size=v["image_size"], data_dir=v["data_dir"],
                             image_root=v["image_root"])
    print(f"Imported {info['family']} ({info['variant']}) into {info['workdir']}.")

  cli.run(main)


if __name__ == "__main__":
  run()
