"""VSE++ triplet (hinge) loss with the hardest negative, per row and per batch.

For query row q with positive candidate p(q) and margin alpha:

  hinge_qj = [alpha + s_qj - s_q,p(q)]_+          for j != p(q)
  L_q      = max_j hinge_qj    (hardest=True, VSE++)
           = sum_j hinge_qj    (hardest=False, the VSE++ warm-up)

The batch loss averages image->text rows (rows of `scores`) and text->image
rows (rows of `scores.T`, i.e. columns), each with positive p(q) = q:

  L = (mean_i L_i^{i2t} + mean_j L_j^{t2i}) / 2.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from itr_jax.losses import _validation


def triplet_rows(query_scores: jax.Array, positive_index: jax.Array, *,
                 margin=0.2, hardest: bool = True) -> jax.Array:
  """Hinge loss [Q] of Q query rows [Q, N]; row q's positive is `positive_index[q]`.

  >>> s = jnp.array([[0.5, 0.6, 0.1]])
  >>> round(float(triplet_rows(s, jnp.array([0]), margin=0.2)[0]), 4)  # 0.2+0.6-0.5
  0.3
  >>> round(float(triplet_rows(s, jnp.array([0]), hardest=False)[0]), 4)  # 0.3 + 0
  0.3
  """
  _validation.check_rank("query_scores", query_scores, 2)
  _validation.check_rank("positive_index", positive_index, 1)
  if positive_index.shape[0] != query_scores.shape[0]:
    raise ValueError(
        f"`positive_index` needs one entry per query row ({query_scores.shape[0]}), "
        f"got shape {positive_index.shape}.")
  if not jnp.issubdtype(jnp.result_type(positive_index), jnp.integer):
    raise ValueError(
        f"`positive_index` must be integer, got {jnp.result_type(positive_index)}.")
  _validation.check_nonnegative("margin", margin)
  s = jnp.asarray(query_scores, jnp.promote_types(query_scores.dtype, jnp.float32))
  positive = jnp.take_along_axis(s, positive_index[:, None], axis=1)
  is_positive = jnp.arange(s.shape[1])[None, :] == positive_index[:, None]
  # The positive's own hinge would be `margin`; it is not a negative.
  if hardest:
    # One hardest negative per row takes the gradient (the first of tied ones,
    # as the official code's max(1)): gathering it, rather than differentiating
    # a max over a [Q, N] hinge array, leaves one [Q, N] scatter in the
    # backward pass (batch loss fwd+bwd: 2 instead of 6 [B, B] temporaries).
    hardest_index = jnp.argmax(
        jnp.where(is_positive, -jnp.inf, jax.lax.stop_gradient(s)), axis=1)
    negative = jnp.take_along_axis(s, hardest_index[:, None], axis=1)
    hinge = jax.nn.relu(margin + negative - positive)[:, 0]
    # N = 1: no negative (argmax lands on the positive).
    return jnp.where(hardest_index == positive_index, 0.0, hinge)
  hinge = jnp.where(is_positive, 0.0, jax.nn.relu(margin + s - positive))
  return jnp.sum(hinge, axis=1)


def triplet_loss(scores: jax.Array, *, margin=0.2, hardest: bool = True) -> jax.Array:
  """Batch triplet loss (mean i2t + mean t2i) / 2 of `scores` [B, B].

  >>> s = jnp.array([[0.5, 0.6], [0.1, 0.4]])
  >>> # i2t: rows [0.3, 0.0]; t2i: columns [0.0, 0.4]  -> (0.15 + 0.2) / 2
  >>> round(float(triplet_loss(s, margin=0.2)), 4)
  0.175
  """
  _validation.check_square("scores", scores)
  diagonal = jnp.arange(scores.shape[0])
  i2t = triplet_rows(scores, diagonal, margin=margin, hardest=hardest)
  t2i = triplet_rows(scores.T, diagonal, margin=margin, hardest=hardest)
  return (i2t.mean() + t2i.mean()) / 2.0
