"""Image embeddings cached per image tower, preprocessing and images.

Evaluating several checkpoints, retrieving from a split again, or training
with a locked image tower (LiT) must not re-encode images whose embeddings
cannot have changed. An entry depends on

  key = {image tower: SHA-256 of its parameters, preprocessing, source images}

and lives in a cache folder (local or gs://, through `itr_jax.filesystem`)
as ``<name>-<sha256(key)[:16]>.npy`` (float32 ``[N, E]``, one row per image
in split order) with a ``.json`` sidecar holding the key, the shape and the
array file's SHA-256. Cached files are untrusted: the sidecar and the array
are read only up to a size bound, the array only if its checksum, key, shape
and dtype match; anything else (truncated, corrupt, stale, unreadable) is
recomputed and rewritten, array first, sidecar last, each atomically.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> key = cache_key({"w": np.ones(2)}, {"size": 32}, {"split": "dev"})
>>> emb, hit = cached_array(d, "dev", key, lambda: np.eye(3, dtype=np.float32))
>>> hit, cached_array(d, "dev", key, lambda: 1 / 0)[1]
(False, True)
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any, Callable

import jax
import numpy as np

from itr_jax import filesystem as fs

# Sidecars are a few hundred bytes; arrays at most this many (COCO's 123K
# images x 1152 dims in float32 are 0.57 GB).
MAX_SIDECAR_BYTES = 1 << 20
MAX_ARRAY_BYTES = 8 << 30


def params_sha256(params: Any) -> str:
  """SHA-256 over a parameter tree's leaf paths, dtypes, shapes and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    leaf = np.asarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def cache_key(image_params: Any, preprocessing: dict, source: Any, *,
              tower_sha256: str | None = None) -> dict:
  """What an entry depends on: the tower's weights, the preprocessing, the images
  (any JSON value, e.g. `split_source`). `tower_sha256`: `params_sha256` of
  `image_params` when the caller already has it (it reads every weight)."""
  return {"image_tower_sha256": tower_sha256 or params_sha256(image_params),
          "preprocessing": json.loads(json.dumps(preprocessing)),
          "source": json.loads(json.dumps(source))}


def split_source(split) -> dict:
  """The images of a split of raw images: split name, count and a SHA-256 of
  each image's name (file path under the image root, or shard record), in order.

  An image file replaced under the same name is not noticed (its bytes are
  not read): delete the cache folder after editing images in place.
  """
  images = split.images
  digest = hashlib.sha256()
  for i in range(len(images)):
    digest.update(images.name(i).encode("utf-8") + b"\n")
  return {"split": split.split, "num_images": int(len(images)),
          "names_sha256": digest.hexdigest()}


def preprocessing_key(preprocessing) -> dict:
  """The evaluation transform of `image_preprocessing.ImagePreprocessing`
  (resize + centre crop + normalise): what cached embeddings depend on."""
  return {"transform": "resize_center_crop", "size": int(preprocessing.size),
          "mean": [float(m) for m in preprocessing.mean],
          "std": [float(s) for s in preprocessing.std]}


def _key_digest(key: dict) -> str:
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _read_bounded(path: str, limit: int) -> bytes | None:
  """The bytes of `path`, or None if missing, unreadable or over `limit` bytes."""
  try:
    return fs.read_bounded(path, limit)
  except (fs.TooLarge, *fs.errors(path)):
    return None


def _load_entry(npy: str, sidecar: str, key: dict) -> np.ndarray | None:
  """The cached array if the entry is intact and holds `key`; else None."""
  try:
    meta = fs.read_json(sidecar, MAX_SIDECAR_BYTES, what="embedding-cache sidecar")
  except (ValueError, *fs.errors(sidecar)):
    return None
  if not isinstance(meta, dict) or meta.get("key") != key:
    return None
  shape = meta.get("shape")
  if (not isinstance(shape, list) or len(shape) != 2
      or not all(isinstance(n, int) and n >= 0 for n in shape)
      or shape[0] * shape[1] * 4 > MAX_ARRAY_BYTES):
    return None
  # The header of a float32 .npy is under 1 KB.
  data = _read_bounded(npy, shape[0] * shape[1] * 4 + 4096)
  if data is None or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
    return None
  try:
    array = np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, OSError, EOFError):
    return None
  if array.dtype != np.float32 or list(array.shape) != shape:
    return None
  return array


def _write_entry(npy: str, sidecar: str, key: dict, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array, allow_pickle=False)
  data = buffer.getvalue()
  meta = {"key": key, "shape": list(array.shape),
          "sha256": hashlib.sha256(data).hexdigest()}
  fs.makedirs(fs.dirname(npy))
  fs.atomic_write_bytes(npy, data)
  # Last: a reader only trusts an array its sidecar's checksum vouches for.
  fs.atomic_write_text(sidecar, json.dumps(meta, indent=1))


def entry_paths(cache_dir: str, name: str, key: dict) -> tuple[str, str]:
  """(array file, sidecar) of entry (`name`, `key`) in `cache_dir`."""
  if not name.replace("_", "").replace("-", "").isalnum():
    raise ValueError(f"embedding cache name {name!r} must be letters, digits, '_' or '-'.")
  stem = fs.join(cache_dir, f"{name}-{_key_digest(key)[:16]}")
  return stem + ".npy", stem + ".json"


def cached_array(cache_dir: str | None, name: str, key: dict,
                 compute: Callable[[], np.ndarray], *,
                 write: bool = True) -> tuple[np.ndarray, bool]:
  """(float32 array [N, E], whether it came from the cache) for entry (`name`, `key`).

  `compute()` runs only on a miss. With `cache_dir` None nothing is cached;
  a cache folder that cannot be written is logged and skipped (the result
  is the same, only not kept). `write=False` reads the cache but leaves a
  miss unwritten (the processes of a multi-host run other than the first).
  """
  if cache_dir:
    npy, sidecar = entry_paths(cache_dir, name, key)
    array = _load_entry(npy, sidecar, key)
    if array is not None:
      return array, True
  array = np.asarray(compute(), np.float32)
  if array.ndim != 2:
    raise ValueError(f"cached embeddings must be [items, dim], got shape {array.shape}.")
  if cache_dir and write:
    try:
      _write_entry(npy, sidecar, key, array)
    except fs.errors(npy) as e:
      logging.warning("Could not cache embeddings in %s (%s); they are recomputed "
                      "next time.", cache_dir, e)
  return array, False


def _cache_dir(config, default: str) -> str | None:
  """config.data.embedding_cache; by default (empty) `default`; "none": None."""
  where = config.data.get("embedding_cache", "")
  return None if where == "none" else where or default


def eval_cache_dir(config, workdir: str) -> str | None:
  """Where evaluating a run keeps embeddings: config.data.embedding_cache, by
  default (empty) ``<workdir>/cache``; "none": nowhere."""
  return _cache_dir(config, fs.join(workdir, "cache"))


def lit_cache_dir(config, data_dir: str) -> str | None:
  """Where LiT training keeps the locked tower's image embeddings, shared by
  every run on the data: config.data.embedding_cache, by default (empty)
  ``<data dir>/embedding_cache``; "none": nowhere."""
  return _cache_dir(config, fs.join(data_dir, "embedding_cache"))


def image_tower_params(params: Any) -> Any:
  """The image tower's part of a two-tower model's params (or variables dict):
  ``image_encoder`` where the model has one (CLIP / SigLIP), else all of them."""
  params = params.get("params", params) if hasattr(params, "get") else params
  if hasattr(params, "get") and params.get("image_encoder") is not None:
    return params["image_encoder"]
  return params


def split_image_embeddings(model, params, split, *, batch_size: int,
                           cache_dir: str | None, wrap=None,
                           tower_sha256: str | None = None) -> tuple[np.ndarray, bool]:
  """(float32 [N_images, E] embeddings of every image of `split`, cache hit).

  Splits of raw images (`image_sources`) encoded by a two-tower model are
  cached in `cache_dir` under (image tower params, evaluation preprocessing,
  `split_source`); region features and cross-attention scorers are encoded
  every time. In a multi-process run every process reads the cache and the
  first one writes it. `wrap` wraps the batch iterator (a progress bar).
  """
  # pylint: disable=import-outside-toplevel
  from itr_jax.data import image_sources
  from itr_jax.data import pipeline
  from itr_jax.evaluation import encode
  from itr_jax.models import scorer

  def compute():
    batches = pipeline.eval_image_batches(split, batch_size=batch_size,
                                          process_index=0, process_count=1)
    return encode.encode_images(model, params, wrap(batches) if wrap else batches)

  if not (cache_dir and image_sources.is_image_source(split.images)
          and scorer.is_two_tower(model)):
    return compute(), False
  key = cache_key(image_tower_params(params),
                  preprocessing_key(split.images.preprocessing), split_source(split),
                  tower_sha256=tower_sha256)
  return cached_array(cache_dir, f"{split.split}_images", key, compute,
                      write=jax.process_index() == 0)
