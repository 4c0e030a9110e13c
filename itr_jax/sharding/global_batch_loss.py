"""The listwise ITR loss of a batch split over devices, with global-batch semantics.

Each of D devices holds B/D image-caption pairs (rows [o, o + B/D) of the
global batch, o = device index * B/D). Every query must still rank against
all B candidates, so each device

* all-gathers the other modality's embeddings (B x E each way) and the
  caption sentence embeddings (B x D_s, no gradient),
* scores only its own queries: image rows s[i, :] = img_i . cap_all and
  caption rows s[:, j] = cap_j . img_all, both [B/D, B],
* computes the relevance rows those queries need: R[i, :] from its own
  images' caption embeddings against all captions (rows of `rsc`). For the
  t2i direction, "paper" mode uses R[j, :] for caption query j, which is the
  row of image j, held by the same device, so the i2t rows are reused;
  "transpose" mode uses R[:, j] (all images vs caption j) and all-gathers the
  images' caption embeddings [B, C, D_s] for it,
* sums its rows' triplet hinges (hardest negative over all B candidates),
  S-NDCG and hard NDCG, and `psum`s the sums over the batch axes.

So loss and gradients equal `listwise_itr_loss(img @ cap.T, rsc(...))` on
the global batch, while each device's loss memory and compute are O(B^2/D)
(O(B^2 * chunk / D) for the chunked smooth ranks) instead of O(B^2). The gradient of
the all-gathers is a reduce-scatter, handled by autodiff.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from itr_jax import losses
from itr_jax.losses import _validation
from itr_jax.relevance import rsc_matrix
from itr_jax.sharding import mesh as mesh_lib

AxisName = str | tuple[str, ...]


def _with_positives(relevance_rows: jax.Array, offset) -> jax.Array:
  """R_ii = 1: local row r is global pair offset + r."""
  rows, cols = relevance_rows.shape
  is_pair = jnp.arange(cols)[None, :] == offset + jnp.arange(rows)[:, None]
  return jnp.where(is_pair, jnp.ones((), relevance_rows.dtype), relevance_rows)


def _global_mean(local_values: jax.Array, axis_name: Optional[AxisName],
                 global_size: int) -> jax.Array:
  total = jnp.sum(local_values)
  if axis_name is not None:
    total = jax.lax.psum(total, axis_name)
  return total / global_size


def local_listwise_itr_loss(image_emb: jax.Array, caption_emb: jax.Array,
                            image_caption_emb: jax.Array,
                            caption_sentence_emb: jax.Array, *,
                            axis_name: Optional[AxisName], margin=0.2, tau=0.01,
                            weight=0.5, t2i_relevance: str = "paper",
                            idcg: str = "tied", hardest: bool = True,
                            chunk_size: Optional[int] = None,
                            rsc_snap: bool = True, rank_method: str = "chunked",
                            pairwise: str = "triplet", logit_scale=0.0,
                            logit_bias=0.0):
  """One device's share of `listwise_itr_loss` on the global batch.

  Call inside `shard_map` (or `pmap`) over `axis_name` (a mesh axis or a
  tuple of them), each device passing its B/D pairs; the result is the loss
  of the whole batch of B pairs, the same on every device. `axis_name=None`
  means no collectives: the local block is the whole batch.

  Args:
    image_emb, caption_emb: [B/D, E] this device's image and caption
      embeddings (pair r is image r and caption r).
    image_caption_emb: [B/D, C, D_s] sentence embeddings of each local image's
      C captions; caption_sentence_emb: [B/D, D_s] of each local caption
      (both for RSC relevance; no gradient flows into them).
    margin, tau, weight, t2i_relevance, idcg, hardest, chunk_size,
      rank_method, pairwise, logit_scale, logit_bias: as in
      `itr_jax.losses.listwise_itr_loss`.
    rsc_snap: snap the RSC relevance to its 2^-20 grid (`rsc_matrix`'s
      `snap`); False is the official float32 relevance, whose rounding can
      differ between device counts at ties.

  Returns:
    (loss, aux), aux with `pairwise`, `listwise`, `ndcg_i2t`, `ndcg_t2i`,
    `hard_ndcg_i2t`, `hard_ndcg_t2i`: all global-batch means.

  >>> img = jnp.eye(3)[:2]; cap = jnp.eye(3)[:2]
  >>> sent = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  >>> loss, aux = local_listwise_itr_loss(img, cap, sent[:, None], sent,
  ...                                     axis_name=None)
  >>> round(float(aux["pairwise"]), 4), round(float(aux["ndcg_i2t"]), 4)
  (0.0, 1.0)
  """
  _validation.check_rank("image_emb", image_emb, 2)
  _validation.check_same_shape("caption_emb", caption_emb, "image_emb", image_emb)
  _validation.check_rank("image_caption_emb", image_caption_emb, 3)
  _validation.check_rank("caption_sentence_emb", caption_sentence_emb, 2)
  local = image_emb.shape[0]
  if image_caption_emb.shape[0] != local or caption_sentence_emb.shape[0] != local:
    raise ValueError(
        f"`image_caption_emb` {image_caption_emb.shape} and "
        f"`caption_sentence_emb` {caption_sentence_emb.shape} need one row per "
        f"local pair ({local}), like `image_emb` {image_emb.shape}.")

  gather = lambda x: _gather(x, axis_name)
  # Query rows: image i vs every caption, caption j vs every image.
  i2t_scores = image_emb @ gather(caption_emb).T
  t2i_scores = caption_emb @ gather(image_emb).T
  return local_loss_of_rows(
      i2t_scores, t2i_scores, image_caption_emb, caption_sentence_emb,
      axis_name=axis_name, margin=margin, tau=tau, weight=weight,
      t2i_relevance=t2i_relevance, idcg=idcg, hardest=hardest,
      chunk_size=chunk_size, rsc_snap=rsc_snap, rank_method=rank_method,
      pairwise=pairwise, logit_scale=logit_scale, logit_bias=logit_bias)


def _gather(x, axis_name, axis=0):
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=axis, tiled=True)


def local_loss_of_rows(i2t_scores: jax.Array, t2i_scores: jax.Array,
                       image_caption_emb: jax.Array,
                       caption_sentence_emb: jax.Array, *,
                       axis_name: Optional[AxisName], margin=0.2, tau=0.01,
                       weight=0.5, t2i_relevance: str = "paper",
                       idcg: str = "tied", hardest: bool = True,
                       chunk_size: Optional[int] = None, rsc_snap: bool = True,
                       rank_method: str = "chunked", pairwise: str = "triplet",
                       logit_scale=0.0, logit_bias=0.0):
  """`local_listwise_itr_loss` given this device's query rows of the scores.

  `i2t_scores` [B/D, B]: s[i, :] of the local images (global rows o..o+B/D);
  `t2i_scores` [B/D, B]: s[:, j]ᵀ of the local captions. Whatever model
  produced them (dot products or a cross-attention scorer), the result is
  the global batch's loss, as in `local_listwise_itr_loss`.
  """
  _validation.check_rank("i2t_scores", i2t_scores, 2)
  _validation.check_same_shape("t2i_scores", t2i_scores, "i2t_scores", i2t_scores)
  _validation.check_unit_interval("weight", weight)
  _validation.check_choice("t2i_relevance", t2i_relevance,
                           losses.smooth_ndcg.T2I_RELEVANCE_MODES)
  local, global_size = i2t_scores.shape
  if global_size < 2:
    raise ValueError(f"The global batch needs at least 2 pairs, got {global_size}.")
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local
  gather = lambda x: _gather(x, axis_name)
  image_caption_emb = jax.lax.stop_gradient(image_caption_emb)
  caption_sentence_emb = jax.lax.stop_gradient(caption_sentence_emb)
  i2t_rel = _with_positives(
      rsc_matrix(image_caption_emb, gather(caption_sentence_emb), snap=rsc_snap),
      offset)
  if t2i_relevance == "paper":
    t2i_rel = i2t_rel
  else:
    t2i_rel = _with_positives(
        rsc_matrix(gather(image_caption_emb), caption_sentence_emb,
                   snap=rsc_snap).T, offset)

  positives = offset + jnp.arange(local)

  def mean(rows):
    return _global_mean(rows, axis_name, global_size)

  rows = lambda s: losses.pairwise_rows(
      pairwise, s, positives, margin=margin, hardest=hardest,
      logit_scale=logit_scale, logit_bias=logit_bias)
  pairwise_term = (mean(rows(i2t_scores)) + mean(rows(t2i_scores))) / 2.0
  # "auto" resolves by the global batch (every query ranks all B candidates),
  # so sharded and unsharded training pick the same kernel.
  smooth = dict(tau=tau, idcg=idcg, chunk_size=chunk_size,
                rank_method=rank_method)
  ideal_i2t, ideal_t2i = losses.ideal_dcgs(i2t_rel, t2i_rel, idcg=idcg)
  ndcg_i2t = mean(losses.smooth_ndcg_rows(i2t_scores, i2t_rel, ideal=ideal_i2t,
                                          **smooth))
  ndcg_t2i = mean(losses.smooth_ndcg_rows(t2i_scores, t2i_rel, ideal=ideal_t2i,
                                          **smooth))
  listwise = ((1.0 - ndcg_i2t) + (1.0 - ndcg_t2i)) / 2.0
  loss = (1.0 - weight) * pairwise_term + weight * listwise
  hard = jax.lax.stop_gradient
  aux = {
      "pairwise": pairwise_term,
      "listwise": listwise,
      "ndcg_i2t": ndcg_i2t,
      "ndcg_t2i": ndcg_t2i,
      "hard_ndcg_i2t": mean(losses.hard_ndcg_rows(hard(i2t_scores), i2t_rel,
                                                  idcg=idcg, ideal=ideal_i2t)),
      "hard_ndcg_t2i": mean(losses.hard_ndcg_rows(hard(t2i_scores), t2i_rel,
                                                  idcg=idcg, ideal=ideal_t2i)),
  }
  return loss, aux


def global_batch_listwise_loss(image_emb: jax.Array, caption_emb: jax.Array,
                               image_caption_emb: jax.Array,
                               caption_sentence_emb: jax.Array, *, mesh: Mesh,
                               **loss_kwargs):
  """`listwise_itr_loss` of a global batch whose rows are split over `mesh`.

  Equals `listwise_itr_loss(image_emb @ caption_emb.T, rsc(image_caption_emb,
  caption_sentence_emb, snap=rsc_snap), **loss_kwargs)`, but each device only
  computes its own query rows (see the module docstring). Use under `jax.jit`; the inputs
  are [B, ...] arrays split (or to be split) along the mesh's batch axes
  (`mesh_lib.batch_axes`); B must be a multiple of their size.

  Args:
    image_emb, caption_emb: [B, E]; image_caption_emb: [B, C, D_s];
      caption_sentence_emb: [B, D_s].
    mesh: the device mesh.
    **loss_kwargs: margin, tau, weight, t2i_relevance, idcg, hardest,
      chunk_size, rsc_snap, rank_method (see `local_listwise_itr_loss`).

  Returns:
    (loss, aux) like `listwise_itr_loss`, replicated over the mesh.

  >>> from itr_jax.sharding import mesh as mesh_lib
  >>> mesh = mesh_lib.create_mesh([("data", -1)], devices=jax.devices()[:2])
  >>> emb = jnp.eye(4)
  >>> sent = jnp.eye(4)
  >>> loss, aux = jax.jit(lambda *a: global_batch_listwise_loss(*a, mesh=mesh))(
  ...     emb, emb, sent[:, None], sent)
  >>> round(float(aux["hard_ndcg_t2i"]), 4)
  1.0
  """
  axes = mesh_lib.batch_axes(mesh)
  mesh_lib.check_batch_size(image_emb.shape[0], mesh, what="the global batch")
  rows = PartitionSpec(axes)

  def per_device(*args):
    return local_listwise_itr_loss(*args, axis_name=axes, **loss_kwargs)

  return jax.shard_map(per_device, mesh=mesh, in_specs=rows,
                       out_specs=PartitionSpec())(
                           image_emb, caption_emb, image_caption_emb,
                           caption_sentence_emb)


def global_batch_scorer_loss(score_fn, variables, image_repr, caption_repr,
                             image_caption_emb: jax.Array,
                             caption_sentence_emb: jax.Array, *, mesh: Mesh,
                             **loss_kwargs):
  """The listwise loss of a global batch scored by a cross-attention model.

  `score_fn(variables, image_repr, caption_repr) -> (scores [I, C], aux)`
  (aux: per-caption arrays [C]) scores any images against any captions,
  e.g. `itr_jax.models.scorer.similarity`. Each device scores *all* B images
  against its own B/D captions (the columns s[:, j] of its pairs, so a
  per-caption statistic sees the whole batch, as on one device), the
  columns are all-gathered into the full [B, B] matrix and each device takes
  its query rows in both directions for `local_loss_of_rows`. The pairwise
  scoring work is split D ways; loss and gradients equal those of
  `listwise_itr_loss(score_fn(variables, image_repr, caption_repr)[0], rsc(...))`.

  Args:
    score_fn: the scorer (closed over nothing traced: pass `variables`).
    variables: model variables, replicated.
    image_repr, caption_repr: pytrees of [B, ...] arrays split over the batch axes.
    image_caption_emb [B, C, D_s], caption_sentence_emb [B, D_s]: for RSC.
    mesh, **loss_kwargs: as in `global_batch_listwise_loss`.

  Returns:
    (loss, aux, score_aux): aux as `listwise_itr_loss`; score_aux the
    scorer's per-caption arrays for the whole batch, in caption order.
  """
  axes = mesh_lib.batch_axes(mesh)
  mesh_lib.check_batch_size(jax.tree.leaves(image_repr)[0].shape[0], mesh,
                            what="the global batch")
  rows = PartitionSpec(axes)

  def per_device(variables, image_repr, caption_repr, image_caption_emb,
                 caption_sentence_emb):
    gather = lambda x: _gather(x, axes)
    columns, score_aux = score_fn(variables, jax.tree.map(gather, image_repr),
                                  caption_repr)  # [B, B/D]
    local = columns.shape[1]
    offset = jax.lax.axis_index(axes) * local
    scores = _gather(columns, axes, axis=1)  # [B, B]
    i2t_scores = jax.lax.dynamic_slice_in_dim(scores, offset, local, axis=0)
    loss, aux = local_loss_of_rows(i2t_scores, columns.T, image_caption_emb,
                                   caption_sentence_emb, axis_name=axes,
                                   **loss_kwargs)
    return loss, aux, score_aux

  # score_aux stays split over the devices' captions: a global [B] array.
  return jax.shard_map(per_device, mesh=mesh,
                       in_specs=(PartitionSpec(), rows, rows, rows, rows),
                       out_specs=(PartitionSpec(), PartitionSpec(), rows))(
                           variables, image_repr, caption_repr,
                           image_caption_emb, caption_sentence_emb)
