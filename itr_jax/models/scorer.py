r"""One interface for every ITR model: encode images and captions, then score pairs.

A *scorer* encodes images and captions into whatever representation it
needs (a vector, or regions / words as pytrees of arrays with a leading item
axis) and `similarity(image_repr, caption_repr) -> [N_images, N_captions]`
scores every pair. The losses consume that matrix unchanged.

* Two-tower models (`VSEModel`, `two_tower = True`): the representation is
  one unit vector per item and the score a dot product (the fast path).
* Cross-attention models (`SGRAF`): the model's own `similarity` method,
  run here over chunks of captions (`lax.map` + `jax.checkpoint`, so a B×B
  training batch holds only one chunk's activations at a time).

Variables: a two-tower model only has `params`; models with BatchNorm also
carry `batch_stats` (`has_batch_stats`). Functions here take the variables
dict `{"params": ..., ["batch_stats": ...]}`.

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

from typing import Any, Optional

import jax
import jax.numpy as jnp

Variables = dict[str, Any]


def state_variables(state):
  """What evaluation needs of a train state: the params of a two-tower model,
  the variables dict (params + batch_stats) of a cross-attention one."""
  batch_stats = getattr(state, "batch_stats", None)
  if batch_stats is None:
    return state.params
  return {"params": state.params, "batch_stats": batch_stats}


def as_variables(params_or_variables) -> Variables:
  """`{"params": p}` for bare params; a variables dict unchanged."""
  if isinstance(params_or_variables, dict) and "params" in params_or_variables:
    return params_or_variables
  return {"params": params_or_variables}


def is_two_tower(model) -> bool:
  """True for models whose score is `image_emb @ caption_emb.T`."""
  return getattr(model, "two_tower", True)


def has_batch_stats(variables) -> bool:
  return isinstance(variables, dict) and "batch_stats" in variables


def _stats_mutable(variables, train):
  return ["batch_stats"] if train and has_batch_stats(variables) else False


def encode_images(model, variables: Variables, images, *, train: bool = False,
                  rng: Optional[jax.Array] = None):
  """(image_repr, updated batch_stats or None) of images [B, R, F]."""
  if is_two_tower(model):
    return model.apply(variables, images, method="encode_images"), None
  out = model.apply(variables, images, train=train, method="encode_images",
                    rngs=None if rng is None else {"dropout": rng},
                    mutable=_stats_mutable(variables, train))
  return (out[0], out[1]["batch_stats"]) if _stats_mutable(variables, train) else (out, None)


def encode_texts(model, variables: Variables, tokens, lengths, *, train: bool = False,
                 rng: Optional[jax.Array] = None):
  """Caption representation of tokens [B, L] / lengths [B]."""
  if is_two_tower(model):
    return model.apply(variables, tokens, lengths, method="encode_texts")
  return model.apply(variables, tokens, lengths, train=train, method="encode_texts",
                     rngs=None if rng is None else {"dropout": rng})


def encode(model, variables: Variables, images, tokens, lengths, *,
           train: bool = False, rng: Optional[jax.Array] = None):
  """(image_repr, caption_repr, new batch_stats or None) of one batch.

  In training (`train=True`) cross-attention models use dropout (rng
  `rng`, split between the towers) and batch statistics, which update
  `batch_stats`.
  """
  image_rng = text_rng = None
  if rng is not None:
    image_rng, text_rng = jax.random.split(rng)
  image_repr, batch_stats = encode_images(model, variables, images, train=train, rng=image_rng)
  caption_repr = encode_texts(model, variables, tokens, lengths, train=train, rng=text_rng)
  return image_repr, caption_repr, batch_stats


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


def merge_batch_stats(model, batch_stats, aux):
  """Batch statistics after the similarity network's own updates (if any)."""
  merge = getattr(type(model), "merge_similarity_stats", None)
  if merge is None or batch_stats is None:
    return batch_stats
  return merge(batch_stats, aux)
