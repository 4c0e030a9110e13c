"""The [N_images, N_captions] score matrix of a whole split, for any scorer.

Two-tower models: one matrix product of the embeddings. Cross-attention
scorers (SGRAF: ~16 MMAC per pair, so 5000 × 25000 COCO pairs are
petaflops): blocks of `image_block` images × `caption_block` captions, each
block's captions split over all devices of the mesh (`shard_map`; every
device scores its captions against the block's images, `score_chunk`
captions at a time), with a tqdm progress bar and ETA over the blocks.
"""
from __future__ import annotations

import functools
import jax
import numpy as np
from jax.sharding import PartitionSpec

from itr_jax import sharding
from itr_jax.models import scorer
from itr_jax import progress as progress_lib


def trim_words(caption_repr):
  """Drops word columns that are padding for every caption (`mask` all False).

  Caption batches are padded to `data.max_len`; the pairwise scorer's cost
  grows with the padded length, and padded words are masked anyway.
  """
  if not (isinstance(caption_repr, dict) and "mask" in caption_repr):
    return caption_repr
  mask = np.asarray(caption_repr["mask"])
  length = max(int(np.max(np.nonzero(mask.any(axis=0))[0], initial=0)) + 1, 1)
  return {k: (v[:, :length] if k in ("words", "mask") else v)
          for k, v in caption_repr.items()}


@functools.lru_cache(maxsize=8)
def _block_scorer(model, mesh):
  axes = sharding.batch_axes(mesh)

  def per_device(variables, images, captions):
    return scorer.similarity(model, variables, images, captions)[0]

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(axes)),
      out_specs=PartitionSpec(None, axes)))


def _rows(tree, start, stop, size):
  """Rows [start, stop) of every leaf, padded to `size` rows by repeating row 0."""
  def take(x):
    block = np.asarray(x[start:stop])
    extra = size - block.shape[0]
    return np.concatenate([block, np.repeat(block[:1], extra, 0)]) if extra else block
  return jax.tree.map(take, tree)


def similarity_matrix(model, params, image_repr, caption_repr, *, mesh=None,
                      image_block: int = 128, caption_block: int = 128,
                      progress: bool = True) -> np.ndarray:
  """float32 scores [N_images, N_captions] of every image against every caption.

  `params`: params or variables dict; `image_repr` / `caption_repr`: what
  `encode.encode_split` returned. Two-tower: `image_emb @ caption_emb.T`.
  Otherwise blocked as in the module docstring; `caption_block` is rounded up
  to a multiple of the mesh's batch shards (default mesh: all devices).

  >>> import jax.numpy as jnp
  >>> from itr_jax.models import VSEModel
  >>> similarity_matrix(VSEModel(vocab_size=3), None, np.eye(2), np.ones((3, 2))).shape
  (2, 3)
  """
  if scorer.is_two_tower(model):
    return np.asarray(jax.numpy.asarray(image_repr) @ jax.numpy.asarray(caption_repr).T)
  variables = scorer.as_variables(params)
  mesh = mesh or sharding.create_mesh((("data", -1),))
  shards = sharding.num_batch_shards(mesh)
  caption_block = -(-caption_block // shards) * shards
  caption_repr = trim_words(caption_repr)
  num_images, num_captions = scorer.num_items(image_repr), scorer.num_items(caption_repr)
  image_block = min(image_block, num_images)
  score_block = _block_scorer(model, mesh)
  sims = np.zeros((num_images, num_captions), np.float32)
  starts = [(i, j) for i in range(0, num_images, image_block)
            for j in range(0, num_captions, caption_block)]
  bar = progress_lib.ProgressBar(starts, unit="block", disable=not progress or jax.process_index() != 0,
                  desc=f"scores {num_images}x{num_captions}", dynamic_ncols=True)
  for i, j in bar:
    i_end, j_end = min(i + image_block, num_images), min(j + caption_block, num_captions)
    block = score_block(variables, _rows(image_repr, i, i_end, image_block),
                        _rows(caption_repr, j, j_end, caption_block))
    sims[i:i_end, j:j_end] = np.asarray(block)[:i_end - i, :j_end - j]
  return sims


def ensemble(*sims: np.ndarray) -> np.ndarray:
  """The mean of several runs' score matrices (SGRAF = mean of SGR and SAF).

  >>> ensemble(np.ones((1, 2)), np.zeros((1, 2)))
  array([[0.5, 0.5]])
  """
  shapes = {s.shape for s in sims}
  if len(shapes) != 1:
    raise ValueError(f"Ensembled score matrices must have one shape, got {sorted(shapes)}.")
  return sum(sims) / len(sims)

