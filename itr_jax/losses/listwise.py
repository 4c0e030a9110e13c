"""The paper's combined objective: (1 - lambda) * triplet + lambda * S-NDCG."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from itr_jax.losses import _validation
from itr_jax.losses import smooth_ndcg
from itr_jax.losses import triplet


def listwise_itr_loss(scores: jax.Array, relevance: jax.Array, *, margin=0.2,
                      tau=0.01, weight=0.5, t2i_relevance: str = "paper",
                      idcg: str = "tied", hardest: bool = True,
                      chunk_size: Optional[int] = None,
                      rank_method: str = "chunked"):
  """L = (1 - weight) * L_triplet + weight * L_S-NDCG for `scores` [B, B].

  `scores[i, j]` is the similarity of image i and caption j (pair (i, i) is
  the positive); `relevance` [B, B] is the RSC relevance
  (`itr_jax.relevance.rsc`). L_triplet is `triplet.triplet_loss` (margin,
  hardest) and L_S-NDCG is `smooth_ndcg.smooth_ndcg_loss` (tau,
  t2i_relevance, idcg, chunk_size, rank_method). Hyperparameters may be traced (vmap over
  a grid); they are validated when concrete.

  Returns:
    The pair `(loss, aux)`; aux holds `pairwise`, `listwise` and the batch means
    `ndcg_i2t`, `ndcg_t2i` (smooth) and `hard_ndcg_i2t`, `hard_ndcg_t2i`.

  >>> s = jnp.array([[0.9, 0.1], [0.2, 0.8]])
  >>> r = jnp.array([[1.0, 0.3], [0.3, 1.0]])
  >>> loss, aux = listwise_itr_loss(s, r, weight=0.5)
  >>> round(float(aux["pairwise"]), 4), round(float(loss), 4)  # S-NDCG loss is 0
  (0.0, 0.0)
  """
  smooth_ndcg.check_batch(scores, relevance)
  _validation.check_unit_interval("weight", weight)
  pairwise = triplet.triplet_loss(scores, margin=margin, hardest=hardest)
  listwise, aux = smooth_ndcg.smooth_ndcg_loss(
      scores, relevance, tau=tau, t2i_relevance=t2i_relevance, idcg=idcg,
      chunk_size=chunk_size, rank_method=rank_method)
  loss = (1.0 - weight) * pairwise + weight * listwise
  return loss, {"pairwise": pairwise, "listwise": listwise, **aux}
