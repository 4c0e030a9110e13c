"""Smooth-NDCG (S-NDCG) of Li et al. (2023), per query row and for a batch.

For query row q with graded relevance R_q (RSC, in [0, 1]) and ranks r_q:

  DCG_q  = sum_j (2^{R_qj} - 1) / log2(1 + r_qj)
  NDCG_q = DCG_q / IDCG_q            (0 where IDCG_q = 0, e.g. R_q = 0)

S-NDCG uses the smooth ranks of `ranks.smooth_ranks`; hard NDCG uses
r_qj = 1 + #{k : s_qk > s_qj}. The ideal DCG has two conventions:

* ``idcg="tied"`` (official code): IDCG_q = sum_j (2^{R_qj} - 1) /
  log2(1 + rank_qj) with rank_qj = 1 + #{k : R_qk > R_qj}, so tied
  relevances share the best rank of their group;
* ``idcg="sorted"``: the textbook IDCG, relevance sorted in decreasing order
  and discounted by positions 1..N.

Relevance is a target: it receives no gradient.

The row functions take a block of Q query rows against all N candidates, so
that a device holding Q of the B queries computes exactly its share.
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from itr_jax.losses import _validation
from itr_jax.losses import ranks as ranks_lib
from itr_jax.losses import sorted_ranks

IDCG_MODES = ("tied", "sorted")
T2I_RELEVANCE_MODES = ("paper", "transpose")


def discounted_cumulative_gain(relevance: jax.Array, ranks: jax.Array) -> jax.Array:
  """DCG_q = sum_j (2^{R_qj} - 1) / log2(1 + r_qj) for rows [Q, N] -> [Q].

  >>> rel, ranks = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 2.0]])
  >>> discounted_cumulative_gain(rel, ranks).tolist()
  [1.0]
  """
  gains = jnp.exp2(relevance) - 1.0
  return jnp.sum(gains / jnp.log2(1.0 + ranks), axis=-1)


def ideal_dcg(relevance: jax.Array, *, idcg: str = "tied") -> jax.Array:
  """IDCG of each row of `relevance` [Q, N] -> [Q] (see the module docstring).

  >>> rel = jnp.array([[1.0, 0.5, 0.5]])
  >>> g = 2 ** 0.5 - 1
  >>> tied = 1 + 2 * g / jnp.log2(3.0)               # both 0.5s at rank 2
  >>> bool(jnp.isclose(ideal_dcg(rel, idcg="tied")[0], tied))
  True
  >>> ordered = 1 + g / jnp.log2(3.0) + g / jnp.log2(4.0)
  >>> bool(jnp.isclose(ideal_dcg(rel, idcg="sorted")[0], ordered))
  True
  """
  _validation.check_choice("idcg", idcg, IDCG_MODES)

  def rows(rel):
    if idcg == "tied":
      return discounted_cumulative_gain(rel, ranks_lib.hard_ranks(rel))
    descending = -jnp.sort(-rel, axis=-1)
    positions = jnp.arange(1, rel.shape[-1] + 1, dtype=rel.dtype)
    return discounted_cumulative_gain(descending, positions)

  return _large_in_row_blocks(rows, jax.lax.stop_gradient(relevance))


def _large_in_row_blocks(fn, *rows):
  """fn(*rows) on [Q, N] arrays; in row blocks from N = 1024 candidates on.

  There the [Q, N] temporaries of the sorts would double the sorted S-NDCG's
  peak memory; below, one call keeps the results bit-for-bit as they were.
  """
  q, n = rows[0].shape
  large = n >= ranks_lib.AUTO_SORTED_MIN_CANDIDATES
  return sorted_ranks.row_blocks(
      fn, *rows, row_block=sorted_ranks.DEFAULT_ROW_BLOCK if large else q)


def ideal_dcgs(i2t_relevance: jax.Array, t2i_relevance: jax.Array, *,
               idcg: str = "tied") -> tuple[jax.Array, jax.Array]:
  """IDCGs of both directions' relevance rows, sorting once if they are one array.

  >>> rel = jnp.array([[1.0, 0.5], [0.5, 1.0]])
  >>> i2t, t2i = ideal_dcgs(rel, rel)
  >>> bool((i2t == t2i).all())
  True
  """
  ideal_i2t = ideal_dcg(i2t_relevance, idcg=idcg)
  if t2i_relevance is i2t_relevance:  # t2i_relevance="paper"
    return ideal_i2t, ideal_i2t
  return ideal_i2t, ideal_dcg(t2i_relevance, idcg=idcg)


def _ndcg_rows(ranks: jax.Array, relevance: jax.Array, ideal: jax.Array) -> jax.Array:
  """NDCG per row from given ranks and IDCGs; 0 (and no NaN gradient) where IDCG = 0."""
  positive = ideal > 0
  dcg = discounted_cumulative_gain(relevance, ranks)
  return jnp.where(positive, dcg / jnp.where(positive, ideal, 1.0), 0.0)


def _check_rows(query_scores, query_relevance, idcg):
  _validation.check_rank("query_scores", query_scores, 2)
  _validation.check_same_shape("query_relevance", query_relevance,
                               "query_scores", query_scores)
  _validation.check_choice("idcg", idcg, IDCG_MODES)


def _as_float(x: jax.Array) -> jax.Array:
  return jnp.asarray(x, jnp.promote_types(jnp.result_type(x), jnp.float32))


def smooth_ndcg_rows(query_scores: jax.Array, query_relevance: jax.Array, *,
                     tau=0.01, idcg: str = "tied",
                     chunk_size: Optional[int] = None,
                     rank_method: str = "chunked",
                     ideal: Optional[jax.Array] = None) -> jax.Array:
  """S-NDCG [Q] of Q query rows [Q, N] against all N candidates.

  O(Q * N * chunk_size) memory, exact gradient (`ranks.smooth_ranks`, whose
  `method` is `rank_method`: "chunked", "sorted" or "auto"). `ideal` [Q], if
  given, is `ideal_dcg(query_relevance, idcg=idcg)` computed once by the
  caller (it sorts the relevance rows: shared between the smooth and hard
  NDCG, and between directions when they use the same relevance rows).

  >>> s = jnp.array([[0.9, 0.1, 0.5]])
  >>> r = jnp.array([[1.0, 0.0, 0.5]])
  >>> round(float(smooth_ndcg_rows(s, r, tau=0.01)[0]), 4)   # ideal order
  1.0
  """
  _check_rows(query_scores, query_relevance, idcg)
  rel = jax.lax.stop_gradient(_as_float(query_relevance))
  ideal = _ideal_or_given(rel, idcg, ideal)
  if ranks_lib.resolve_rank_method(rank_method, query_scores.shape[1]) == "sorted":
    _validation.check_positive("tau", tau)
    _validation.check_chunk_size(chunk_size)
    s = _as_float(query_scores)
    sorted_ranks.check_candidates(s.shape[1])
    # tau typed like the rows (under shard_map: varying), so that the custom
    # VJP's d/dtau, a sum over these rows, has tau's type; autodiff then sums
    # it over the devices.
    tau = jnp.where(True, jnp.asarray(tau, s.dtype), jax.lax.stop_gradient(s[0, 0]))
    return _sorted_ndcg_rows(s, tau, rel.astype(s.dtype), ideal.astype(s.dtype),
                             sorted_ranks.DEFAULT_ROW_BLOCK)
  ranks = ranks_lib.smooth_ranks(query_scores, tau=tau, chunk_size=chunk_size,
                                 method=rank_method)
  return _ndcg_rows(ranks, rel.astype(ranks.dtype), ideal.astype(ranks.dtype))


def _ideal_or_given(rel: jax.Array, idcg: str, ideal: Optional[jax.Array]) -> jax.Array:
  if ideal is None:
    return ideal_dcg(rel, idcg=idcg)
  # A [Q] reference: one IDCG per query row.
  _validation.check_same_shape("ideal", ideal, "query_relevance[:, 0]", rel[:, 0])
  return jax.lax.stop_gradient(ideal)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sorted_ndcg_rows(s, tau, rel, ideal, row_block):
  """S-NDCG rows with sorted smooth ranks, `row_block` query rows at a time.

  Fused so that the only [Q, N] residual is the sort permutation (uint16): the
  backward pass re-gathers the sorted values from the scores and reruns the
  (cheap) rank recurrences instead of sorting again, and no [Q, N] rank,
  gain or cotangent array of the whole batch is ever live.
  """
  return _sorted_ndcg_rows_fwd(s, tau, rel, ideal, row_block)[0]


def _sorted_ndcg_rows_fwd(s, tau, rel, ideal, row_block):
  def rows(s, rel, ideal):
    v, perm = sorted_ranks.sort_rows(s / tau)
    ranks = sorted_ranks.unsort(sorted_ranks.ranks_in_sorted_order(v), perm)
    # N <= MAX_CANDIDATES < 2^16: the saved permutation takes 2 bytes a score.
    return _ndcg_rows(ranks, rel, ideal), perm.astype(jnp.uint16)

  ndcg, perm = sorted_ranks.row_blocks(rows, s, rel, ideal, row_block=row_block)
  return ndcg, (s, tau, rel, ideal, perm)


def _sorted_ndcg_rows_bwd(row_block, residuals, g):
  s, tau, rel, ideal, perm = residuals

  def rows(s, rel, ideal, perm, g):
    u = s / tau
    perm = perm.astype(jnp.int32)
    v = jnp.take_along_axis(u, perm, axis=1)
    rel = jnp.take_along_axis(rel, perm, axis=1)
    positive = ideal > 0
    scale = jnp.where(positive, g / jnp.where(positive, ideal, 1.0), 0.0)
    _, dcg_vjp = jax.vjp(lambda r: discounted_cumulative_gain(rel, r),
                         sorted_ranks.ranks_in_sorted_order(v))
    du = sorted_ranks.unsort(
        sorted_ranks.grad_in_sorted_order(v, dcg_vjp(scale)[0]), perm)
    # u = s / tau: dL/ds = du / tau, dL/dtau = -sum du * u / tau.
    return du / tau, -jnp.sum(du * u, axis=1) / tau

  ds, dtau = sorted_ranks.row_blocks(rows, s, rel, ideal, perm, g,
                                     row_block=row_block)
  return ds, jnp.sum(dtau).astype(tau.dtype), None, None


_sorted_ndcg_rows.defvjp(_sorted_ndcg_rows_fwd, _sorted_ndcg_rows_bwd)


def dense_smooth_ndcg_rows(query_scores: jax.Array, query_relevance: jax.Array, *,
                           tau=0.01, idcg: str = "tied") -> jax.Array:
  """`smooth_ndcg_rows` with O(Q * N^2) memory and plain autodiff (reference).

  >>> s = jnp.array([[0.9, 0.1, 0.5]])
  >>> r = jnp.array([[1.0, 0.0, 0.5]])
  >>> round(float(dense_smooth_ndcg_rows(s, r, tau=0.01)[0]), 4)
  1.0
  """
  _check_rows(query_scores, query_relevance, idcg)
  rel = jax.lax.stop_gradient(_as_float(query_relevance))
  ranks = ranks_lib.dense_smooth_ranks(query_scores, tau=tau)
  rel = rel.astype(ranks.dtype)
  return _ndcg_rows(ranks, rel, ideal_dcg(rel, idcg=idcg))


def hard_ndcg_rows(query_scores: jax.Array, query_relevance: jax.Array, *,
                   idcg: str = "tied", ideal: Optional[jax.Array] = None) -> jax.Array:
  """NDCG [Q] with hard ranks r_qj = 1 + #{k : s_qk > s_qj}; no gradient.

  `ideal`: as in `smooth_ndcg_rows`.

  >>> s = jnp.array([[0.1, 0.9]])
  >>> r = jnp.array([[1.0, 0.0]])   # the relevant candidate is ranked 2nd
  >>> round(float(hard_ndcg_rows(s, r)[0]), 4)   # 1 / log2(3)
  0.6309
  """
  _check_rows(query_scores, query_relevance, idcg)
  rel = jax.lax.stop_gradient(_as_float(query_relevance))
  ideal = _ideal_or_given(rel, idcg, ideal)

  def rows(s, rel, ideal):
    ranks = ranks_lib.hard_ranks(s)
    return _ndcg_rows(ranks, rel.astype(ranks.dtype), ideal.astype(ranks.dtype))

  return _large_in_row_blocks(rows, query_scores, rel, ideal)


def t2i_relevance_rows(relevance: jax.Array, t2i_relevance: str) -> jax.Array:
  """Relevance rows for the text-to-image queries (rows of scores.T).

  "paper" (official code) reuses R's rows: caption query j is scored against
  R[j, :]; "transpose" uses R.T, i.e. caption j's relevance to image i is
  R[i, j].
  """
  _validation.check_choice("t2i_relevance", t2i_relevance, T2I_RELEVANCE_MODES)
  return relevance if t2i_relevance == "paper" else relevance.T


def check_batch(scores: jax.Array, relevance: jax.Array) -> None:
  """Validates a [B, B] score matrix and its relevance matrix."""
  _validation.check_square("scores", scores)
  _validation.check_same_shape("relevance", relevance, "scores", scores)


def smooth_ndcg_loss(scores: jax.Array, relevance: jax.Array, *, tau=0.01,
                     t2i_relevance: str = "paper", idcg: str = "tied",
                     chunk_size: Optional[int] = None,
                     rank_method: str = "chunked"):
  """S-NDCG loss of a batch: ((1 - S-NDCG_i2t) + (1 - S-NDCG_t2i)) / 2.

  `scores[i, j]` is image i vs caption j; i2t queries are the rows of `scores`
  with relevance rows R, t2i queries the rows of `scores.T` with relevance
  rows `t2i_relevance_rows(R, t2i_relevance)`. NDCGs are batch means.
  `chunk_size` and `rank_method` choose the smooth-rank kernel
  (`ranks.smooth_ranks`).

  Returns:
    (loss, aux) with aux = {ndcg_i2t, ndcg_t2i, hard_ndcg_i2t, hard_ndcg_t2i}.

  >>> s = jnp.array([[0.9, 0.1], [0.2, 0.8]])
  >>> r = jnp.array([[1.0, 0.3], [0.3, 1.0]])
  >>> loss, aux = smooth_ndcg_loss(s, r)
  >>> round(float(loss), 4), round(float(aux["hard_ndcg_i2t"]), 4)
  (0.0, 1.0)
  """
  check_batch(scores, relevance)
  return smooth_ndcg_loss_of_rows(
      scores, scores.T, relevance, t2i_relevance_rows(relevance, t2i_relevance),
      tau=tau, idcg=idcg, chunk_size=chunk_size, rank_method=rank_method)


def smooth_ndcg_loss_of_rows(i2t_scores: jax.Array, t2i_scores: jax.Array,
                             i2t_relevance: jax.Array, t2i_relevance: jax.Array, *,
                             tau=0.01, idcg: str = "tied",
                             chunk_size: Optional[int] = None,
                             rank_method: str = "chunked", mean=jnp.mean):
  """`smooth_ndcg_loss` from query rows of both directions: (loss, aux).

  `i2t_scores` / `i2t_relevance` [Q, N]: image queries against all N
  captions; `t2i_scores` / `t2i_relevance` [Q, N]: caption queries against
  all N images (pass the same relevance array twice when the directions
  share it: its IDCG is then computed once). `mean(rows)` reduces a [Q]
  array to the batch mean (over devices, for a sharded batch).
  """
  _validation.check_choice("idcg", idcg, IDCG_MODES)
  ideal_i2t, ideal_t2i = ideal_dcgs(i2t_relevance, t2i_relevance, idcg=idcg)
  smooth = dict(tau=tau, idcg=idcg, chunk_size=chunk_size,
                rank_method=rank_method)
  ndcg_i2t = mean(smooth_ndcg_rows(i2t_scores, i2t_relevance, ideal=ideal_i2t,
                                   **smooth))
  ndcg_t2i = mean(smooth_ndcg_rows(t2i_scores, t2i_relevance, ideal=ideal_t2i,
                                   **smooth))
  hard = jax.lax.stop_gradient
  aux = {
      "ndcg_i2t": ndcg_i2t,
      "ndcg_t2i": ndcg_t2i,
      "hard_ndcg_i2t": mean(hard_ndcg_rows(hard(i2t_scores), i2t_relevance,
                                           idcg=idcg, ideal=ideal_i2t)),
      "hard_ndcg_t2i": mean(hard_ndcg_rows(hard(t2i_scores), t2i_relevance,
                                           idcg=idcg, ideal=ideal_t2i)),
  }
  loss = ((1.0 - ndcg_i2t) + (1.0 - ndcg_t2i)) / 2.0
  return loss, aux
