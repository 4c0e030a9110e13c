"""Encode every image and caption of a split, in fixed-shape jit-compiled batches."""
from __future__ import annotations

import functools
from typing import Iterable, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding

from itr_jax import sharding
from itr_jax.models import scorer


def _encode_fns(model):
  # Evaluation mode; `params` may be bare params or a variables dict.
  return (lambda params, images: scorer.encode_images(
              model, scorer.as_variables(params), images)[0],
          lambda params, tokens, lengths: scorer.encode_texts(
              model, scorer.as_variables(params), tokens, lengths)[0])


@functools.lru_cache(maxsize=8)
def _encoders(model):
  """Compiled encoders for `model`, shared across evaluations (no recompiles)."""
  return tuple(jax.jit(fn) for fn in _encode_fns(model))


@functools.lru_cache(maxsize=8)
def _sharded_encoders(model, mesh):
  """`_encoders` with the batch split over `mesh` and the embeddings gathered."""
  return tuple(jax.jit(fn, out_shardings=sharding.replicated(mesh))
               for fn in _encode_fns(model))


def _split_over(mesh, array: np.ndarray) -> jax.Array:
  """A global array of `array` (present on every process) split along the batch."""
  rows = sharding.batch_sharding(mesh)
  return jax.make_array_from_callback(array.shape, rows, lambda index: array[index])


def _pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
  extra = -array.shape[0] % multiple
  if not extra:
    return array
  return np.concatenate([array, np.repeat(array[:1], extra, axis=0)], axis=0)


def _encode(encode_fn, params, batches: Iterable[Mapping[str, np.ndarray]],
            keys, mesh=None) -> np.ndarray:
  chunks = []
  for batch in batches:
    inputs = [np.asarray(batch[k]) for k in keys]
    if mesh is not None:
      # Pad to a multiple of the batch shards; the padding is cut off below.
      shards = sharding.num_batch_shards(mesh)
      inputs = [_split_over(mesh, _pad_rows(x, shards)) for x in inputs]
    mask = np.asarray(batch["mask"], bool)
    # A representation may be a pytree (e.g. regions + global vector).
    chunks.append(jax.tree.map(lambda e: np.asarray(e)[:mask.shape[0]][mask],
                               encode_fn(params, *inputs)))
  return jax.tree.map(lambda *c: np.concatenate(c, axis=0), *chunks)


def params_mesh(params):
  """The mesh `params` are placed on, if it has several devices; else None."""
  leaves = jax.tree.leaves(params)
  placement = getattr(leaves[0], "sharding", None) if leaves else None
  if isinstance(placement, NamedSharding) and placement.mesh.size > 1:
    return placement.mesh
  return None


def encode_split(model, params, image_batches, caption_batches, *,
                 mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """Embeddings of each image once and of each caption, padding rows dropped.

  `params`: the model's params, or its variables dict (with batch_stats).
  For a cross-attention scorer the "embeddings" are its representations
  (pytrees of arrays with one row per item); score them with
  `itr_jax.evaluation.similarity.similarity_matrix`.

  `image_batches` yield `images` [B, R, F] and `mask` [B]; `caption_batches`
  yield `tokens` [B, L], `lengths` [B] and `mask` [B] (the last batch of a
  split is padded to the same shape so one compiled program serves all).

  On a device mesh (`mesh`, by default the one `params` are placed on), each
  batch is split over the mesh's batch axes, the devices encode their rows
  in parallel and the embeddings are gathered onto every device (and
  process). Every process must then pass the same, whole batches.
  """
  return (encode_images(model, params, image_batches, mesh=mesh),
          encode_captions(model, params, caption_batches, mesh=mesh))


def _encoders_for(model, params, mesh):
  mesh = params_mesh(params) if mesh is None else mesh
  return mesh, (_encoders(model) if mesh is None else _sharded_encoders(model, mesh))


def encode_images(model, params, image_batches, *, mesh=None):
  """The image half of `encode_split`: each image's embedding, padding dropped."""
  mesh, (encode_fn, _) = _encoders_for(model, params, mesh)
  return _encode(encode_fn, params, image_batches, ("images",), mesh)


def encode_captions(model, params, caption_batches, *, mesh=None):
  """The caption half of `encode_split`: each caption's embedding, padding dropped."""
  mesh, (_, encode_fn) = _encoders_for(model, params, mesh)
  return _encode(encode_fn, params, caption_batches, ("tokens", "lengths"), mesh)
