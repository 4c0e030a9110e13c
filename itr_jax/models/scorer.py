r"""One interface for every ITR model: encode images and captions, then score pairs.

A model (a flax module) provides

* `encode_images(images [B, R, F], region_mask=None, train=False)` and
  `encode_texts(tokens [B, L], lengths [B], train=False)`: a representation
  per item (a vector, or regions / words as pytrees of arrays with a leading
  item axis). `train=True` in training: dropout draws from the "dropout"
  rng, and collections other than `params` (e.g. BatchNorm's `batch_stats`)
  are updated.
* `two_tower` (class attribute, default True): the score is the dot product
  `image_repr @ caption_repr.T` of unit vectors (the fast path). Otherwise
  (`SGRAF`) `similarity(image_repr, caption_repr, train=False) -> (scores
  [I, C], aux)`, run here over chunks of captions (`lax.map` +
  `jax.checkpoint`, so a B×B training batch holds one chunk's activations at
  a time), and optionally `merge_similarity_stats(batch_stats, aux)`.

A new two-tower model needs only the two encoders (registered in
`models.registry`); training, sharding, checkpoints and evaluation follow.
Functions here take the variables dict `{"params": ..., **other
collections}`.

>>> import jax, jax.numpy as jnp
>>> from itr_jax.models import VSEModel
>>> model = VSEModel(vocab_size=10, word_dim=3, embed_size=4)
>>> images, tokens, lengths = jnp.ones((2, 5, 6)), jnp.ones((3, 4), int), jnp.array([4, 2, 1])
>>> variables = model.init(jax.random.key(0), images[:1], tokens[:1], lengths[:1])
>>> img, cap, _ = encode(model, variables, images, tokens, lengths)
>>> similarity(model, variables, img, cap)[0].shape
(2, 3)
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

Variables = dict[str, Any]
AxisName = str | tuple[str, ...]


def as_variables(params_or_variables) -> Variables:
  """`{"params": p}` for bare params; a variables dict unchanged."""
  if isinstance(params_or_variables, dict) and "params" in params_or_variables:
    return params_or_variables
  return {"params": params_or_variables}


def is_two_tower(model) -> bool:
  """True for models whose score is `image_emb @ caption_emb.T`."""
  return getattr(model, "two_tower", True)


def _apply(model, variables: Variables, *args, method: str, train: bool,
           rng: Optional[jax.Array], **kwargs):
  """(output, variables after the call): in training the collections other
  than `params` are mutable and come back updated."""
  mutable = [k for k in variables if k != "params"] if train else []
  out = model.apply(variables, *args, train=train, method=method,
                    rngs=None if rng is None else {"dropout": rng},
                    mutable=mutable or False, **kwargs)
  if not mutable:
    return out, variables
  out, updated = out
  return out, {**variables, **updated}


def encode_images(model, variables: Variables, images, *, region_mask=None,
                  train: bool = False, rng: Optional[jax.Array] = None):
  """(image_repr, variables after the call) of images [B, R, F]."""
  return _apply(model, variables, images, region_mask=region_mask,
                method="encode_images", train=train, rng=rng)


def encode_texts(model, variables: Variables, tokens, lengths, *, train: bool = False,
                 rng: Optional[jax.Array] = None):
  """(caption_repr, variables after the call) of tokens [B, L] / lengths [B]."""
  return _apply(model, variables, tokens, lengths, method="encode_texts",
                train=train, rng=rng)


def encode(model, variables: Variables, images, tokens, lengths, *,
           region_mask=None, train: bool = False, rng: Optional[jax.Array] = None):
  """(image_repr, caption_repr, variables after both encoders) of one batch.

  In training (`train=True`) dropout draws from `rng` (split between the
  towers) and collections such as `batch_stats` are updated.
  """
  image_rng = text_rng = None
  if rng is not None:
    image_rng, text_rng = jax.random.split(rng)
  image_repr, variables = encode_images(model, variables, images, region_mask=region_mask,
                                        train=train, rng=image_rng)
  caption_repr, variables = encode_texts(model, variables, tokens, lengths, train=train,
                                         rng=text_rng)
  return image_repr, caption_repr, variables


def num_items(repr_tree) -> int:
  return jax.tree.leaves(repr_tree)[0].shape[0]


def similarity(model, variables: Variables, image_repr, caption_repr, *,
               train: bool = False, chunk_size: Optional[int] = None):
  r"""(scores [N_images, N_captions], aux) for every image-caption pair.

  Two-tower: `image_repr @ caption_repr.T`, aux {}. Cross-attention: the
  model's `similarity` over chunks of captions, each chunk rematerialised
  in the backward pass; aux holds per-caption arrays [N_captions] (e.g.
  BatchNorm statistics) in caption order. The chunk is the largest divisor
  of N_captions not above `chunk_size` (default the model's `score_chunk`;
  0 or None: all captions at once).
  """
  if is_two_tower(model):
    return image_repr @ caption_repr.T, {}

  def score(captions):
    return model.apply(variables, image_repr, captions, train=train, method="similarity")

  num = num_items(caption_repr)
  if chunk_size is None:
    chunk_size = getattr(model, "score_chunk", 0)
  if not chunk_size or chunk_size >= num:
    return score(caption_repr)
  chunk_size = max(d for d in range(1, chunk_size + 1) if num % d == 0)
  chunks = jax.tree.map(lambda x: x.reshape((num // chunk_size, chunk_size) + x.shape[1:]),
                        caption_repr)
  scores, aux = jax.lax.map(jax.checkpoint(score), chunks)  # [K, N_img, c]
  scores = jnp.moveaxis(scores, 0, 1).reshape(scores.shape[1], num)
  aux = jax.tree.map(lambda a: a.reshape((num,) + a.shape[2:]), aux)
  return scores, aux


def query_scores(model, variables: Variables, image_repr, caption_repr, *,
                 axis_name: Optional[AxisName] = None, train: bool = False):
  """(i2t [Q, B], t2i [Q, B], aux): this device's query rows of a batch's scores.

  Each device holds Q = B / D pairs of the batch (rows offset..offset+Q-1,
  split over `axis_name`; None: one device, Q = B). `i2t` are its images
  against all B captions, `t2i` its captions against all B images. Two-tower:
  dot products with the all-gathered other tower (B x E each way; aux {}).
  Cross-attention: the device scores all B images against its own Q captions
  (so a per-caption statistic sees the whole batch, as on one device), the
  columns are all-gathered into [B, B] and its image rows sliced out; aux
  holds `similarity`'s per-caption arrays of its captions.
  """
  if is_two_tower(model):
    return dot_product_scores(None, image_repr, caption_repr, axis_name=axis_name)
  gather = functools.partial(_gather, axis_name=axis_name)
  columns, aux = similarity(model, variables, jax.tree.map(gather, image_repr),
                            caption_repr, train=train)  # [B, Q]
  if axis_name is None:
    return columns, columns.T, aux
  local = columns.shape[1]
  scores = gather(columns, axis=1)  # [B, B]
  i2t = jax.lax.dynamic_slice_in_dim(scores, jax.lax.axis_index(axis_name) * local,
                                     local, axis=0)
  return i2t, columns.T, aux


def dot_product_scores(variables, image_emb, caption_emb, *,
                       axis_name: Optional[AxisName] = None):
  """`query_scores` of embeddings [Q, E]: dot products, aux {} (`variables` unused).

  >>> i2t, t2i, _ = dot_product_scores(None, jnp.eye(2), 2 * jnp.eye(2))
  >>> i2t.tolist(), t2i.tolist()
  ([[2.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 2.0]])
  """
  del variables
  if axis_name is None:
    scores = image_emb @ caption_emb.T
    return scores, scores.T, {}
  return (image_emb @ _gather(caption_emb, axis_name=axis_name).T,
          caption_emb @ _gather(image_emb, axis_name=axis_name).T, {})


def _gather(x, axis=0, *, axis_name):
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=axis, tiled=True)


def merge_similarity_state(model, variables: Variables, aux) -> Variables:
  """`variables` after the similarity network's own statistics updates (if any)."""
  merge = getattr(type(model), "merge_similarity_stats", None)
  if merge is None or "batch_stats" not in variables:
    return variables
  return {**variables, "batch_stats": merge(variables["batch_stats"], aux)}
