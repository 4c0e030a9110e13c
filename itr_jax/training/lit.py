"""LiT (locked image tower, Zhai et al. 2022) fed by the data pipeline.

With `config.model.lit` the image tower of a CLIP / SigLIP dual encoder is
frozen. Its embedding of every image is computed once (the evaluation
transform: resize + centre crop, so no image augmentation under LiT) and
cached (`embedding_cache`, keyed by the tower's parameters, the
preprocessing and the split's images). The training and dev splits then
hold those embeddings ``[N_images, E]`` in place of pixels, so a training
step runs only the text tower and the loss.

The locked tower's weights are those of `train.init_from` (its
``image_encoder``), else a fresh initialisation from `config.seed`. They are
kept in the workdir (``lit_image_tower.safetensors``), so a resumed run and
`itr_jax.evaluate` / `retrieve` / `inference` encode images with the same
tower.

>>> import ml_collections
>>> from itr_jax.models import dual_encoder
>>> m = dual_encoder.create_model(ml_collections.ConfigDict(dict(name="clip", variant="tiny", lit=True, vocab_size=9)))
>>> locked_tower(m).image_shape
(32, 32, 3)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from itr_jax import filesystem as fs
from itr_jax.evaluation import embedding_cache
from itr_jax.models import dual_encoder
from itr_jax.models.normalize import l2_normalize
from itr_jax.training import init_from as init_from_lib

TOWER_FILE = "lit_image_tower.safetensors"
# A So400m/14 image tower is 1.7 GB in float32.
MAX_TOWER_BYTES = 4 << 30


class LockedImageTower(nn.Module):
  """The image tower alone: ``encode_images`` of the dual encoder it belongs to
  (same parameter names, ``image_encoder/...``)."""
  arch: Any
  dtype: Any = None
  param_dtype: Any = jnp.float32
  two_tower = True

  @property
  def image_shape(self):
    return (self.arch.image_size, self.arch.image_size, 3)

  def setup(self):
    self.image_encoder = dual_encoder.ImageTower(self.arch, dtype=self.dtype,
                                                 param_dtype=self.param_dtype)

  def encode_images(self, images, region_mask=None, train: bool = False):
    del region_mask, train
    return l2_normalize(self.image_encoder(images))


def enabled(config) -> bool:
  return bool(config.model.get("lit", False))


def locked_tower(model) -> LockedImageTower:
  """The image tower of the LiT dual encoder `model` (which has none itself)."""
  return LockedImageTower(model.arch, dtype=model.dtype, param_dtype=model.param_dtype)


def _abstract(tower: LockedImageTower):
  return jax.eval_shape(lambda: tower.init(
      jax.random.PRNGKey(0), jnp.zeros((1, *tower.image_shape), jnp.float32),
      method="encode_images")["params"]["image_encoder"])


def _check_fits(params, abstract, where: str) -> None:
  want = init_from_lib.describe(abstract)
  have = init_from_lib.describe(jax.tree.map(np.asarray, params))
  diffs = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
  if diffs:
    details = "; ".join(f"{k}: {have.get(k, 'missing')} vs this model's "
                        f"{want.get(k, 'missing')}" for k in diffs[:4])
    raise ValueError(f"The image tower in {where} does not fit model.* "
                     f"({len(diffs)} differ: {details}); use the model settings "
                     "it was trained or imported with.")


def save_tower(path: str, params) -> None:
  """Writes the locked tower's parameters to `path` (safetensors), atomically."""
  flat = {k: np.asarray(jax.device_get(v))
          for k, v in flax.traverse_util.flatten_dict(params, sep="/").items()}
  fs.atomic_write_bytes(path, safetensors.numpy.save(flat))


def load_tower(path: str, tower: LockedImageTower):
  """The parameters in `path`, checked against `tower`'s names, shapes and dtypes."""
  data = fs.read_bounded(path, MAX_TOWER_BYTES, what="locked image tower")
  try:
    flat = safetensors.numpy.load(data)
  except Exception as e:  # pylint: disable=broad-except  (safetensors' own error type)
    raise ValueError(f"{path} is not a readable safetensors file ({e}); delete the "
                     "workdir's copy only if the run is started afresh.") from e
  params = flax.traverse_util.unflatten_dict(flat, sep="/")
  _check_fits(params, _abstract(tower), path)
  return params


def locked_params(config, workdir: str | None, model):
  """(locked tower parameters, where they come from), reading only.

  A resumed run's workdir copy first, then `train.init_from`'s
  ``image_encoder``, else a seeded initialisation.
  """
  if config.model.name not in ("clip", "siglip"):
    raise ValueError(f"model.lit locks the image tower of a CLIP / SigLIP dual encoder; "
                     f"model.name={config.model.name!r} has none: unset model.lit.")
  if config.data.name not in ("images", "synthetic_pixels"):
    raise ValueError(f"model.lit embeds raw images with the locked tower; data.name="
                     f"{config.data.name!r} has none (use 'images' or 'synthetic_pixels').")
  tower = locked_tower(model)
  if workdir and fs.exists(fs.join(workdir, TOWER_FILE)):
    path = fs.join(workdir, TOWER_FILE)
    return load_tower(path, tower), path
  if config.train.get("init_from"):
    directory, step = init_from_lib.resolve(config.train.init_from)
    saved = init_from_lib.model_variables_of(
        init_from_lib.restore_on_one_device(directory, step))
    if "image_encoder" not in saved["params"]:
      raise ValueError(f"config.train.init_from={config.train.init_from!r} has no image "
                       "tower (params/image_encoder) to lock: model.lit needs a CLIP / "
                       "SigLIP checkpoint.")
    params = jax.device_get(saved["params"]["image_encoder"])
    _check_fits(params, _abstract(tower), f"{directory}/{step}")
    return params, f"{directory}/{step}"
  params = tower.init(jax.random.PRNGKey(config.seed),
                      jnp.zeros((1, *tower.image_shape), jnp.float32),
                      method="encode_images")["params"]["image_encoder"]
  return jax.device_get(params), f"a fresh initialisation (seed {config.seed})"


def embedded_split(split, tower: LockedImageTower, params, *, batch_size: int,
                   cache_dir: str | None, tower_sha256: str | None = None):
  """`split` with its images replaced by the locked tower's unit-norm
  embeddings [N_images, E] (from the cache when unchanged)."""
  emb, _ = embedding_cache.split_image_embeddings(
      tower, {"params": {"image_encoder": params}}, split, batch_size=batch_size,
      cache_dir=cache_dir, tower_sha256=tower_sha256)
  return dataclasses.replace(split, images=emb)


def embed_data(config, workdir: str, data, model, params):
  """`data` (ExperimentData) with train and dev images replaced by cached
  embeddings; writes the locked tower into `workdir` if it is not there."""
  path = fs.join(workdir, TOWER_FILE)
  if not fs.exists(path) and jax.process_index() == 0:
    save_tower(path, params)
  tower = locked_tower(model)
  cache = embedding_cache.lit_cache_dir(config, data.data_dir)
  # One hash of the tower's weights keys both splits' entries.
  kw = dict(batch_size=config.eval.batch_size, cache_dir=cache,
            tower_sha256=embedding_cache.params_sha256(params))
  return dataclasses.replace(data, train=embedded_split(data.train, tower, params, **kw),
                             dev=embedded_split(data.dev, tower, params, **kw))


def run_tower(workdir: str, model) -> tuple[LockedImageTower, Any]:
  """(the locked tower, its parameters) of the LiT run in `workdir`."""
  path = fs.join(workdir, TOWER_FILE)
  if not fs.exists(path):
    raise ValueError(f"{workdir!r} is a LiT run (model.lit) without its locked image "
                     f"tower ({TOWER_FILE}); it cannot encode images.")
  tower = locked_tower(model)
  return tower, load_tower(path, tower)


def embed_run_split(config, workdir: str, model, split, data_dir: str):
  """A LiT run's evaluation split: its images as the run's locked tower embeds them."""
  tower, params = run_tower(workdir, model)
  return embedded_split(split, tower, params,
                        batch_size=config.eval.batch_size,
                        cache_dir=embedding_cache.lit_cache_dir(config, data_dir))
