r"""CLIP's InfoNCE and SigLIP's pairwise sigmoid losses, per row and per batch.

Scores are cosine similarities `s` [B, B] (image i vs caption j, positives
on the diagonal); the model's learnable log-temperature :math:`\log t`
(``logit_scale``) and, for SigLIP, bias :math:`b` (``logit_bias``) turn them
into logits :math:`z = t\,s\,(+\,b)`, with :math:`t = e^{\min(\log t,\ \log 100)}`
(CLIP's clamp of the temperature at 100).

* InfoNCE (CLIP): cross-entropy of each query row against its positive,

  .. math:: L_q = \log \textstyle\sum_j e^{z_{qj}} - z_{q,p(q)}, \qquad
            L = \tfrac12(\overline{L^{i2t}} + \overline{L^{t2i}})

* Sigmoid (SigLIP): every pair is a binary classification with label
  :math:`y_{qj} = 1` for the positive, :math:`-1` otherwise,

  .. math:: L_q = -\textstyle\sum_j \log \sigma(y_{qj} z_{qj}), \qquad
            L = \overline{L^{i2t}} = \overline{L^{t2i}}

  (the column sums have the same mean as the row sums, so the symmetric
  mean used here for sharded rows equals big_vision's row mean).

`pairwise_rows` dispatches on the kind ("triplet", "infonce", "sigmoid");
`pairwise_loss` is the batch loss; `chunked_pairwise_loss` computes it from
the embeddings a block of query rows at a time, so no [B, B] array exists.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from itr_jax.losses import _validation
from itr_jax.losses import triplet

PAIRWISE_KINDS = ("triplet", "infonce", "sigmoid")
MAX_LOG_SCALE = math.log(100.0)


def temperature(logit_scale) -> jax.Array:
  """t = exp(min(logit_scale, log 100)) (CLIP's clamp), float32."""
  return jnp.exp(jnp.minimum(jnp.asarray(logit_scale, jnp.float32), MAX_LOG_SCALE))


def _rows(query_scores, positive_index):
  _validation.check_rank("query_scores", query_scores, 2)
  _validation.check_rank("positive_index", positive_index, 1)
  if positive_index.shape[0] != query_scores.shape[0]:
    raise ValueError(f"`positive_index` needs one entry per query row "
                     f"({query_scores.shape[0]}), got shape {positive_index.shape}.")
  s = jnp.asarray(query_scores, jnp.promote_types(query_scores.dtype, jnp.float32))
  is_positive = jnp.arange(s.shape[1])[None, :] == positive_index[:, None]
  return s, is_positive


def infonce_rows(query_scores: jax.Array, positive_index: jax.Array, *,
                 logit_scale=0.0) -> jax.Array:
  """Cross-entropy [Q] of query rows [Q, N] (scores, scaled by t here).

  >>> s = jnp.array([[1.0, 0.0]])
  >>> round(float(infonce_rows(s, jnp.array([0]))[0]), 5)  # log(1 + e^-1)
  0.31326
  """
  s, is_positive = _rows(query_scores, positive_index)
  logits = temperature(logit_scale) * s
  return jax.nn.logsumexp(logits, axis=1) - jnp.sum(jnp.where(is_positive, logits, 0.0), 1)


def sigmoid_rows(query_scores: jax.Array, positive_index: jax.Array, *,
                 logit_scale=0.0, logit_bias=0.0) -> jax.Array:
  """-sum_j log sigmoid(y_qj (t s_qj + b)) [Q] of query rows [Q, N].

  >>> s = jnp.array([[1.0, 0.0]])
  >>> round(float(sigmoid_rows(s, jnp.array([0]))[0]), 5)  # log(1+e^-1) + log 2
  1.00641
  """
  s, is_positive = _rows(query_scores, positive_index)
  logits = temperature(logit_scale) * s + jnp.asarray(logit_bias, jnp.float32)
  labels = jnp.where(is_positive, 1.0, -1.0)
  return -jnp.sum(jax.nn.log_sigmoid(labels * logits), axis=1)


def pairwise_rows(kind: str, query_scores: jax.Array, positive_index: jax.Array, *,
                  margin=0.2, hardest: bool = True, logit_scale=0.0,
                  logit_bias=0.0) -> jax.Array:
  """Per-row pairwise loss [Q] of the kind named ("triplet", "infonce", "sigmoid")."""
  _validation.check_choice("pairwise", kind, PAIRWISE_KINDS)
  if kind == "triplet":
    return triplet.triplet_rows(query_scores, positive_index, margin=margin,
                                hardest=hardest)
  if kind == "infonce":
    return infonce_rows(query_scores, positive_index, logit_scale=logit_scale)
  return sigmoid_rows(query_scores, positive_index, logit_scale=logit_scale,
                      logit_bias=logit_bias)


def pairwise_loss(scores: jax.Array, kind: str = "triplet", **kwargs) -> jax.Array:
  """(mean image->text rows + mean text->image rows) / 2 of `scores` [B, B].

  >>> s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  >>> round(float(pairwise_loss(s, "infonce")), 5), round(float(pairwise_loss(s, "sigmoid")), 5)
  (0.31326, 1.00641)
  """
  _validation.check_square("scores", scores)
  diagonal = jnp.arange(scores.shape[0])
  return (pairwise_rows(kind, scores, diagonal, **kwargs).mean() +
          pairwise_rows(kind, scores.T, diagonal, **kwargs).mean()) / 2.0


def _chunked_row_sum(kind, queries, candidates, chunk_size, kwargs):
  """Sum over query rows of `pairwise_rows(queries @ candidates.T)`, one block at a time."""
  num = queries.shape[0]
  chunk = max(d for d in range(1, min(chunk_size, num) + 1) if num % d == 0)
  blocks = queries.reshape(num // chunk, chunk, queries.shape[1])
  offsets = jnp.arange(num // chunk) * chunk

  @jax.checkpoint
  def block_sum(args):
    block, offset = args
    rows = pairwise_rows(kind, block @ candidates.T, offset + jnp.arange(chunk), **kwargs)
    return jnp.sum(rows)

  return jnp.sum(jax.lax.map(block_sum, (blocks, offsets)))


def chunked_pairwise_loss(image_emb: jax.Array, caption_emb: jax.Array,
                          kind: str = "infonce", *, chunk_size: int = 1024,
                          **kwargs) -> jax.Array:
  """`pairwise_loss(image_emb @ caption_emb.T, kind)` holding at most
  `chunk_size` x B scores at a time (forward and backward: each block is
  recomputed in the backward pass). The block is the largest divisor of B
  not above `chunk_size`.

  >>> e = jnp.eye(4)
  >>> bool(jnp.allclose(chunked_pairwise_loss(e, e, "infonce", chunk_size=2),
  ...                   pairwise_loss(e @ e.T, "infonce")))
  True
  """
  _validation.check_rank("image_emb", image_emb, 2)
  _validation.check_same_shape("caption_emb", caption_emb, "image_emb", image_emb)
  num = image_emb.shape[0]
  i2t = _chunked_row_sum(kind, image_emb, caption_emb, chunk_size, kwargs) / num
  if kind == "sigmoid":  # both directions have the same mean: half the work
    return i2t
  return (i2t + _chunked_row_sum(kind, caption_emb, image_emb, chunk_size, kwargs) / num) / 2.0
