"""The paper's combined objective: (1 - lambda) * pairwise + lambda * S-NDCG.

`listwise_loss_of_rows` is the one implementation: it takes Q query rows in
each direction against all B candidates, so the same code computes a whole
batch (`listwise_itr_loss`, Q = B) and one device's share of a sharded batch
(`itr_jax.sharding.global_batch_loss`, Q = B / D, sums `psum`med over
`axis_name`).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from itr_jax.losses import _validation
from itr_jax.losses import smooth_ndcg
from itr_jax.losses import contrastive
from itr_jax.losses.options import LossOptions

AxisName = str | tuple[str, ...]


def pairwise_rows(query_scores: jax.Array, positive_index: jax.Array,
                  options: LossOptions) -> jax.Array:
  """The pairwise term [Q] of Q query rows [Q, N] (`options.pairwise`).

  Row q's positive candidate is `positive_index[q]`. "triplet": the VSE++
  hinge (`triplet.triplet_rows`: `options.margin`, `options.hardest`);
  "infonce" / "sigmoid": `contrastive.infonce_rows` / `sigmoid_rows` with
  `options.logit_scale` (and `logit_bias`).

  >>> s = jnp.array([[0.5, 0.6, 0.1]])
  >>> round(float(pairwise_rows(s, jnp.array([0]), LossOptions())[0]), 4)
  0.3
  """
  return contrastive.pairwise_rows(
      options.pairwise, query_scores, positive_index, margin=options.margin,
      hardest=options.hardest, logit_scale=options.logit_scale,
      logit_bias=options.logit_bias)


def listwise_loss_of_rows(i2t_scores: jax.Array, t2i_scores: jax.Array,
                          i2t_relevance: jax.Array, t2i_relevance: jax.Array,
                          options: LossOptions = LossOptions(), *, offset=0,
                          axis_name: Optional[AxisName] = None):
  """(loss, aux) of a batch of B pairs from Q query rows in each direction.

  `i2t_scores` [Q, B]: images offset..offset+Q-1 against all B captions;
  `t2i_scores` [Q, B]: captions offset..offset+Q-1 against all B images;
  pair (i, i) is the positive. `i2t_relevance` / `t2i_relevance` [Q, B]: the
  matching rows of the relevance (the same array twice when the directions
  share it). With `axis_name` (inside `shard_map` over it) each device
  passes its rows and `offset` = its first row; the per-row terms are summed
  over the devices, so every device gets the loss of the whole batch:

    L = (1 - w) (mean_i P_i^{i2t} + mean_j P_j^{t2i}) / 2
        + w ((1 - mean_i NDCG_i^{i2t}) + (1 - mean_j NDCG_j^{t2i})) / 2

  with P the pairwise term (`pairwise_rows`) and NDCG the smooth NDCG.

  Returns:
    The pair `(loss, aux)`; aux holds `pairwise`, `listwise` and the batch means
    `ndcg_i2t`, `ndcg_t2i` (smooth) and `hard_ndcg_i2t`, `hard_ndcg_t2i`.
  """
  _validation.check_rank("i2t_scores", i2t_scores, 2)
  _validation.check_same_shape("t2i_scores", t2i_scores, "i2t_scores", i2t_scores)
  _validation.check_unit_interval("weight", options.weight)
  local, global_size = i2t_scores.shape
  if global_size < 2:
    raise ValueError(f"The batch needs at least 2 pairs, got {global_size}.")

  def mean(rows):  # over the rows of every device: the batch mean
    total = jnp.sum(rows)
    if axis_name is not None:
      total = jax.lax.psum(total, axis_name)
    return total / global_size

  positives = offset + jnp.arange(local)
  pairwise = (mean(pairwise_rows(i2t_scores, positives, options)) +
              mean(pairwise_rows(t2i_scores, positives, options))) / 2.0
  # rank_method "auto" resolves by the B candidates of every query, so
  # sharded and unsharded training pick the same kernel.
  listwise, aux = smooth_ndcg.smooth_ndcg_loss_of_rows(
      i2t_scores, t2i_scores, i2t_relevance, t2i_relevance, tau=options.tau,
      idcg=options.idcg, chunk_size=options.chunk_size,
      rank_method=options.rank_method, mean=mean)
  loss = (1.0 - options.weight) * pairwise + options.weight * listwise
  return loss, {"pairwise": pairwise, "listwise": listwise, **aux}


def listwise_itr_loss(scores: jax.Array, relevance: jax.Array,
                      options: LossOptions = LossOptions()):
  """L = (1 - weight) * L_pairwise + weight * L_S-NDCG for `scores` [B, B].

  `scores[i, j]` is the similarity of image i and caption j (pair (i, i) is
  the positive); `relevance` [B, B] is the RSC relevance
  (`itr_jax.relevance.rsc`). L_pairwise is `options.pairwise` (the triplet
  loss `triplet.triplet_loss`: margin, hardest) and L_S-NDCG is
  `smooth_ndcg.smooth_ndcg_loss` (tau, t2i_relevance, idcg, chunk_size,
  rank_method). Numeric options may be traced (vmap over a grid); they are
  validated when concrete.

  Returns:
    The pair `(loss, aux)`, as `listwise_loss_of_rows`.

  >>> s = jnp.array([[0.9, 0.1], [0.2, 0.8]])
  >>> r = jnp.array([[1.0, 0.3], [0.3, 1.0]])
  >>> loss, aux = listwise_itr_loss(s, r, LossOptions(weight=0.5))
  >>> round(float(aux["pairwise"]), 4), round(float(loss), 4)  # S-NDCG loss is 0
  (0.0, 0.0)
  """
  smooth_ndcg.check_batch(scores, relevance)
  return listwise_loss_of_rows(
      scores, scores.T, relevance,
      smooth_ndcg.t2i_relevance_rows(relevance, options.t2i_relevance), options)
