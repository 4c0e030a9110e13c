"""One check of everything a run is given, before anything is written.

`check_config(config)` validates every field the trainer uses (loss, optimizer,
schedule, intervals, data and eval settings, model choices), so that a
mistake is reported in seconds, with the field's name and a value to use,
and never after config.json has been written (which would make the corrected
command look like "a different config"). `check_workdir(workdir)` checks the
workdir can be written without writing to it.

>>> from itr_jax.training import defaults
>>> c = defaults.base_config()
>>> c.train.log_every_steps = 0
>>> check_config(c)
Traceback (most recent call last):
...
ValueError: config.train.log_every_steps must be an int >= 1, got 0. Fix it with e.g. --config.train.log_every_steps=100.
"""
from __future__ import annotations

import math
import os

import ml_collections

from itr_jax import filesystem as fs
from itr_jax.models import registry
from itr_jax.training import defaults
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import train_step as train_step_lib

# field: the smallest allowed value
_INT_FIELDS = {
    "seed": 0, "data.max_len": 3, "data.dev_max_images": 0,
    "data.vocab_min_count": 1, "model.word_dim": 1, "model.embed_size": 1,
    "train.batch_size": 1, "train.num_epochs": 1, "train.max_steps": 0, "train.warmup_epochs": 0,
    "train.log_every_steps": 1, "train.checkpoint_every_steps": 1,
    "train.keep_checkpoints": 1, "eval.batch_size": 1, "eval.ndcg_k": 0,
    "eval.every_epochs": 1, "optim.lr_update": 1, "eval.max_len": 0,
    "train.plateau_notice_epochs": 0, "data.pixels_size": 16,
    "data.image.size": 0,
}
# field: (the largest allowed value, why). Sizes beyond these only exhaust
# memory after config.json was written; the memory estimate below bounds
# their product.
_INT_LIMITS = {
    "data.max_len": (1024, "longer than any caption of the supported datasets; the text "
                     "tower's memory grows with it (BERT takes at most 512)"),
    "model.word_dim": (16384, "a word embedding this wide does not fit memory with a "
                       "real vocabulary"),
    "model.embed_size": (16384, "the joint embedding's weights and similarity matrices "
                         "grow with its square"),
    "train.batch_size": (65536, "the batch's similarity matrix grows with its square"),
    "eval.batch_size": (65536, "a larger evaluation batch does not fit memory"),
    "train.keep_checkpoints": (1000, "each kept checkpoint holds the whole train state"),
}
_CHOICES = {
    "data.name": ("precomputed", "synthetic_scenes", "tfds", "images",
                  "synthetic_pixels"),
    "data.image.crop": ("random_resized", "center"),
    "data.image.flip": (True, False),
    "model.pooling": ("max", "gpo"),
    "model.text_tower": ("gru", "bert"),
    "data.vocab_recipe": ("itr_jax", "official"),
    "eval.ties": ("optimistic", "official"),
    "data.drop_last": (True, False),
    "loss.reduction": ("mean", "sum"),
    "optim.lr_schedule": ("repeat", "once"),
    "model.name": tuple(registry.MODELS),
}


def _get(config, path: str):
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _default(path: str):
  try:
    return _get(defaults.base_config(), path)
  except (KeyError, AttributeError):
    return None


def _fail(path: str, problem: str, value) -> None:
  fix = _default(path)
  hint = f" Fix it with e.g. --config.{path}={fix!r}." if fix not in (None, "") else ""
  raise ValueError(f"config.{path} {problem}, got {value!r}.{hint}")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first invalid field and a value that works."""
  for path, low in _INT_FIELDS.items():
    try:
      value = _get(config, path)
    except (KeyError, AttributeError):
      continue  # configs of older runs may lack newer fields
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      _fail(path, f"must be an int >= {low}", value)
    high, why = _INT_LIMITS.get(path, (None, ""))
    if high is not None and value > high:
      _fail(path, f"must be at most {high} ({why})", value)
  _check_memory(config)
  for path, choices in _CHOICES.items():
    try:
      value = _get(config, path)
    except (KeyError, AttributeError):
      continue
    if value not in choices:
      _fail(path, f"must be one of {list(choices)}", value)
  if 0 < config.eval.get("max_len", 0) < 3:
    _fail("eval.max_len", "must be 0 (the split's longest caption: nothing is "
          "cut) or >= 3 (<start>, a word, <end>)", config.eval.max_len)
  if config.data.name == "tfds":
    if not isinstance(config.data.get("tfds_name"), str) or not config.data.tfds_name:
      _fail("data.tfds_name", "must name a TFDS dataset", config.data.get("tfds_name"))
    if config.data.caption_emb_path:
      _fail("data.caption_emb_path", "must be empty with data.name='tfds' (the "
            "records hold the caption embeddings)", config.data.caption_emb_path)
  cache = config.data.get("local_cache_dir", "")
  if not isinstance(cache, str) or fs.is_remote(cache):
    _fail("data.local_cache_dir", "must be a local folder (gs:// data is "
          "copied there to be memory-mapped; empty: ~/.cache/itr_jax/staged)", cache)
  optim = config.optim
  for name, positive in (("learning_rate", True), ("lr_decay", True),
                         ("grad_clip", False)):
    value = optim.get(name)
    if name == "grad_clip" and value is None:
      continue
    if (isinstance(value, bool) or not isinstance(value, (int, float))
        or not math.isfinite(value) or value < 0 or (positive and value == 0)):
      _fail(f"optim.{name}",
            "must be a finite number " + ("> 0" if positive else ">= 0 (0: no clipping)"),
            value)
  optimizer_lib.check_config(config.optim)
  if config.train.warmup_epochs > config.train.num_epochs:
    _fail("train.warmup_epochs",
          f"must not exceed train.num_epochs={config.train.num_epochs}",
          config.train.warmup_epochs)
  train_step_lib.check_loss_config(config.loss)


def _check_memory(config) -> None:
  """Refuses a train batch whose text activations alone exceed the host's memory.

  Estimate: batch_size * max_len * max(word_dim, embed_size) float32 values,
  times 16 for the recurrent or attention layers' intermediate values and
  their gradients (a low bound: the real use is higher).
  """
  try:
    batch, length = config.train.batch_size, config.data.max_len
    width = max(config.model.word_dim, config.model.embed_size)
  except (KeyError, AttributeError):
    return
  need = batch * length * width * 4 * 16
  try:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return
  if need > memory:
    raise ValueError(
        f"config.train.batch_size={batch} x config.data.max_len={length} x a width of "
        f"{width} needs at least {need / 2**30:.1f} GiB for the text activations, more "
        f"than this machine's {memory / 2**30:.1f} GiB; lower data.max_len or "
        "train.batch_size.")


def check_workdir(workdir: str) -> None:
  """Raises ValueError if `workdir` is a file or cannot be written; writes nothing."""
  if not workdir:
    raise ValueError("--workdir is empty; give the directory for this run.")
  if fs.is_remote(workdir):
    # Object stores have no permission bits to read; access errors surface
    # on the first write, from TensorFlow's file system, naming the URL.
    if fs.exists(workdir) and not fs.isdir(workdir):
      raise ValueError(f"--workdir {workdir!r} is a file, not a directory; "
                       "give a directory URL (it is created if missing).")
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"--workdir {workdir!r} is a file, not a directory; "
                     "give a directory path (it is created if missing).")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"--workdir {workdir!r} cannot be created: {existing!r} "
                     "is a file.")
  # access() reports read-only file systems even to root.
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f"--workdir {workdir!r} is not writable ({existing!r} is "
                     "read-only); choose a writable --workdir.")
