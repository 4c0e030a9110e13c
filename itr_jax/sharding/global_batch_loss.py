"""The listwise ITR loss of a global batch, on one device or split over a mesh.

`global_batch_loss` is the loss of every model and device count. Each of D
devices holds B/D image-caption pairs (rows [o, o + B/D) of the global batch,
o = device index * B/D; D = 1 without a mesh). Every query must still rank
against all B candidates, so each device

* computes its queries' rows of the score matrix in both directions,
  [B/D, B] each way, with the model's `score_fn` (the only model-specific
  step; `itr_jax.models.scorer.query_scores`: two-tower models all-gather the
  other modality's embeddings, cross-attention models score all images
  against their own captions and all-gather those columns),
* computes the relevance rows those queries need: R[i, :] from its own
  images' caption embeddings against all captions (rows of `rsc`, the
  caption sentence embeddings all-gathered, no gradient). For the t2i
  direction, "paper" mode uses R[j, :] for caption query j, which is the
  row of image j, held by the same device, so the i2t rows are reused;
  "transpose" mode uses R[:, j] (all images vs caption j) and all-gathers
  the images' caption embeddings [B, C, D_s] for it,
* computes the loss of its rows (`losses.listwise_loss_of_rows`), whose
  per-row sums are `psum`med over the batch axes.

So loss and gradients equal `listwise_itr_loss(scores, rsc(...))` on the
global batch, while each device's loss memory and compute are O(B^2/D)
(O(B^2 * chunk / D) for the chunked smooth ranks) instead of O(B^2). The
gradient of the all-gathers is a reduce-scatter, handled by autodiff.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
from jax.sharding import Mesh, PartitionSpec

from itr_jax import losses
from itr_jax import relevance as relevance_lib
from itr_jax.sharding import mesh as mesh_lib

AxisName = str | tuple[str, ...]
# score_fn(variables, image_repr, caption_repr, *, axis_name) -> (i2t, t2i, aux)
ScoreFn = Callable


def _gather(x, axis_name):
  return x if axis_name is None else jax.lax.all_gather(x, axis_name, tiled=True)


def relevance_rows(image_caption_emb: jax.Array, caption_sentence_emb: jax.Array,
                   options: losses.LossOptions, *, offset=0,
                   axis_name: Optional[AxisName] = None):
  """(i2t, t2i) RSC relevance rows [Q, B] of this device's Q pairs.

  `image_caption_emb` [Q, C, D_s]: the sentence embeddings of each local
  image's C captions; `caption_sentence_emb` [Q, D_s]: of each local
  caption (row r of both: pair offset + r; `local_loss` checks that they
  align). t2i is the same array as i2t for `t2i_relevance="paper"`.
  """
  image_caption_emb = jax.lax.stop_gradient(image_caption_emb)
  caption_sentence_emb = jax.lax.stop_gradient(caption_sentence_emb)
  i2t = relevance_lib.with_positives(relevance_lib.rsc_matrix(
      image_caption_emb, _gather(caption_sentence_emb, axis_name),
      snap=options.rsc_snap), offset)
  if options.t2i_relevance == "paper":
    return i2t, i2t
  t2i = relevance_lib.with_positives(relevance_lib.rsc_matrix(
      _gather(image_caption_emb, axis_name), caption_sentence_emb,
      snap=options.rsc_snap).T, offset)
  return i2t, t2i


def local_loss(score_fn: ScoreFn, variables, image_repr, caption_repr,
               image_caption_emb: jax.Array, caption_sentence_emb: jax.Array, *,
               options: losses.LossOptions, axis_name: Optional[AxisName] = None):
  """One device's share of `global_batch_loss`: (loss, aux, score_aux).

  Call inside `shard_map` over `axis_name` (a mesh axis or a tuple of
  them), each device passing its B/D pairs; loss and aux are those of the
  whole batch, the same on every device. `axis_name=None`: no collectives,
  the local pairs are the whole batch.

  >>> import jax.numpy as jnp
  >>> from itr_jax.models import scorer
  >>> img = jnp.eye(3)[:2]; cap = jnp.eye(3)[:2]
  >>> sent = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  >>> loss, aux, _ = local_loss(scorer.dot_product_scores, None, img, cap,
  ...                           sent[:, None], sent, options=losses.LossOptions())
  >>> round(float(aux["pairwise"]), 4), round(float(aux["ndcg_i2t"]), 4)
  (0.0, 1.0)
  """
  i2t_scores, t2i_scores, score_aux = score_fn(variables, image_repr, caption_repr,
                                               axis_name=axis_name)
  local = i2t_scores.shape[0]
  if image_caption_emb.shape[0] != local or caption_sentence_emb.shape[0] != local:
    raise ValueError(
        f"`image_caption_emb` {image_caption_emb.shape} and "
        f"`caption_sentence_emb` {caption_sentence_emb.shape} need one row per "
        f"local pair ({local}), like the scores {i2t_scores.shape}.")
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * local
  i2t_rel, t2i_rel = relevance_rows(image_caption_emb, caption_sentence_emb, options,
                                    offset=offset, axis_name=axis_name)
  loss, aux = losses.listwise_loss_of_rows(i2t_scores, t2i_scores, i2t_rel, t2i_rel,
                                           options, offset=offset, axis_name=axis_name)
  return loss, aux, score_aux


def global_batch_loss(score_fn: ScoreFn, variables, image_repr, caption_repr,
                      image_caption_emb: jax.Array, caption_sentence_emb: jax.Array, *,
                      options: losses.LossOptions, mesh: Optional[Mesh] = None):
  """The listwise loss of a global batch: (loss, aux, score_aux).

  Equals `listwise_itr_loss(scores, rsc(image_caption_emb,
  caption_sentence_emb, snap=options.rsc_snap), options)` with `scores` the
  batch's [B, B] score matrix, but with a `mesh` each device only computes
  its own query rows (see the module docstring). Use under `jax.jit`.

  Args:
    score_fn: `score_fn(variables, image_repr, caption_repr, *, axis_name)
      -> (i2t [Q, B], t2i [Q, B], aux)`, the local pairs' query rows
      (`functools.partial(scorer.query_scores, model)`, or
      `scorer.dot_product_scores` for embeddings); aux: per-caption
      arrays [Q] (e.g. BatchNorm statistics of a cross-attention scorer).
    variables: what `score_fn` needs of the model (None for a dot product),
      replicated.
    image_repr, caption_repr: pytrees of [B, ...] arrays, split (or to be
      split) over the mesh's batch axes (`mesh_lib.batch_axes`); B must be a
      multiple of their size.
    image_caption_emb [B, C, D_s], caption_sentence_emb [B, D_s]: for RSC.
    options: the loss's `LossOptions`.
    mesh: the device mesh; None computes on one device.

  Returns:
    (loss, aux, score_aux): aux as `listwise_itr_loss`, replicated;
    score_aux `score_fn`'s aux for the whole batch, in caption order.

  >>> from itr_jax.models import scorer
  >>> mesh = mesh_lib.create_mesh([("data", -1)], devices=jax.devices()[:2])
  >>> emb, sent = jax.numpy.eye(4), jax.numpy.eye(4)
  >>> loss, aux, _ = jax.jit(lambda *a: global_batch_loss(
  ...     scorer.dot_product_scores, None, *a, options=losses.LossOptions(), mesh=mesh))(
  ...     emb, emb, sent[:, None], sent)
  >>> round(float(aux["hard_ndcg_t2i"]), 4)
  1.0
  """
  args = (variables, image_repr, caption_repr, image_caption_emb, caption_sentence_emb)
  if mesh is None:
    return local_loss(score_fn, *args, options=options)
  axes = mesh_lib.batch_axes(mesh)
  mesh_lib.check_batch_size(jax.tree.leaves(image_repr)[0].shape[0], mesh,
                            what="the global batch")
  rows = PartitionSpec(axes)
  per_device = functools.partial(local_loss, score_fn, options=options, axis_name=axes)
  # score_aux stays split over the devices' captions: a global [B] array.
  return jax.shard_map(per_device, mesh=mesh,
                       in_specs=(PartitionSpec(), rows, rows, rows, rows),
                       out_specs=(PartitionSpec(), PartitionSpec(), rows))(*args)
