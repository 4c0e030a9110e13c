"""LiT: image embeddings computed once per image by the locked tower, cached next to the data.

A cache entry is ``<dir>/lit_<name>.npy`` (float32 [N, E], one row per image
in data order) with a ``.json`` sidecar holding its key: the SHA-256 of the
locked image tower's parameters, the preprocessing (size, mean, std, ...)
and the source (e.g. the split and its image ids), plus the array's shape and
SHA-256. An entry is used only if the key and the file's checksum match; a
changed checkpoint, preprocessing or source, a truncated or corrupt file
all recompute it (and overwrite it atomically), so stale embeddings are
never read.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> key = cache_key({"w": np.ones(2)}, {"size": 32}, "dev")
>>> emb, cached = image_embeddings(d, "dev", key, lambda: np.eye(3, dtype=np.float32))
>>> cached, image_embeddings(d, "dev", key, lambda: 1 / 0)[1]
(False, True)
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import jax
import numpy as np


def _sha256_file(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def params_sha256(params: Any) -> str:
  """SHA-256 over a parameter tree's leaf paths, dtypes, shapes and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def cache_key(image_params: Any, preprocessing: dict, source: str) -> dict:
  """What an entry depends on: the tower's weights, the preprocessing, the images."""
  return {"image_tower_sha256": params_sha256(image_params),
          "preprocessing": json.loads(json.dumps(preprocessing)), "source": str(source)}


def _valid(npy: str, sidecar: str, key: dict) -> bool:
  try:
    with open(sidecar, encoding="utf-8") as f:
      meta = json.load(f)
    return (isinstance(meta, dict) and meta.get("key") == key
            and meta.get("sha256") == _sha256_file(npy))
  except (OSError, ValueError, UnicodeDecodeError):
    return False


def image_embeddings(cache_dir: str, name: str, key: dict,
                     compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
  """(embeddings [N, E], whether they came from the cache) for entry `name`.

  `compute()` runs the locked image tower over the images (only on a miss).
  """
  if not name.replace("_", "").replace("-", "").isalnum():
    raise ValueError(f"LiT cache name {name!r} must be letters, digits, '_' or '-'.")
  npy = os.path.join(cache_dir, f"lit_{name}.npy")
  sidecar = os.path.join(cache_dir, f"lit_{name}.json")
  if os.path.isfile(npy) and _valid(npy, sidecar, key):
    try:
      emb = np.load(npy, allow_pickle=False)
      if emb.ndim == 2 and emb.dtype == np.float32:
        return emb, True
    except (OSError, ValueError):
      pass  # unreadable: recompute below
  emb = np.asarray(compute(), np.float32)
  if emb.ndim != 2:
    raise ValueError(f"LiT image embeddings must be [images, dim], got shape {emb.shape}.")
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{npy}.tmp-{os.getpid()}.npy"
  np.save(tmp, emb)
  os.replace(tmp, npy)
  meta = {"key": key, "shape": list(emb.shape), "sha256": _sha256_file(npy)}
  tmp = f"{sidecar}.tmp-{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, sidecar)
  return emb, False
