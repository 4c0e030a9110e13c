"""The jit-compiled train step: encode, score, RSC relevance, listwise loss, update."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from itr_jax import losses
from itr_jax import relevance as relevance_lib
from itr_jax import sharding
from itr_jax.training import defaults
from itr_jax.models import scorer

Batch = Mapping[str, jax.Array]
TrainState = train_state.TrainState


class StatefulTrainState(train_state.TrainState):
  """A `TrainState` that also carries a two-tower model's non-parameter
  variables.

  `model_state` holds collections such as BatchNorm's `batch_stats`
  (VSE-infinity's region MLP): updated by the train step, saved in
  checkpoints, used by evaluation. Models without such variables keep the
  plain `TrainState`, so their checkpoints are unchanged.
  """
  model_state: Any = flax.struct.field(pytree_node=True, default=None)


class ScorerTrainState(train_state.TrainState):
  """A TrainState that also carries BatchNorm running statistics and the
  dropout key of a cross-attention scorer (SGRAF); step s uses dropout key
  `fold_in(dropout_rng, s)`, so a resumed run draws the same masks."""
  batch_stats: Any = None
  dropout_rng: Any = None


def variables(state) -> dict:
  """`{"params": ..., **model state}`: what `model.apply` takes for `state`
  (either kind of state above, or a plain `TrainState`)."""
  extra = dict(getattr(state, "model_state", None) or {})
  if getattr(state, "batch_stats", None):
    extra["batch_stats"] = state.batch_stats
  return {"params": state.params, **extra}


def loss_kwargs(loss_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `listwise_itr_loss` keyword arguments named by `config.loss`."""
  return dict(margin=loss_config.margin, tau=loss_config.tau,
              weight=loss_config.weight,
              t2i_relevance=loss_config.t2i_relevance, idcg=loss_config.idcg,
              # Configs saved before the field existed ran the chunked kernel.
              rank_method=getattr(loss_config, "rank_method", "chunked"))


def rsc_snap(loss_config) -> bool:
  """config.loss.rsc_snap (True for configs saved before the field existed)."""
  return getattr(loss_config, "rsc_snap", True)


LOSS_REDUCTIONS = ("mean", "sum")


def reduction_scale(loss_config, batch_size: int) -> float:
  r"""What the batch-mean loss is multiplied by under `config.loss.reduction`.

  "mean" (default): 1. "sum": 2B, so that the loss is the sum over the B
  queries of both directions, as the official VSE-infinity and SGRAF
  triplet (`cost_s.sum() + cost_im.sum()`); both terms are scaled alike,

  .. math:: 2B\,[(1-\lambda)\,ar L_{trip} + \lambda\,(1 - \overline{\mathrm{NDCG}})]
            = (1-\lambda) \sum_{q,\,dir} L_{trip,q} + \lambda \sum_{q,\,dir} (1 - \mathrm{NDCG}_q),

  so λ keeps its meaning. Adam cancels a constant scale; gradient clipping
  at a fixed norm does not.

  >>> reduction_scale(ml_collections.ConfigDict({"reduction": "sum"}), 128)
  256.0
  """
  reduction = getattr(loss_config, "reduction", "mean")  # older configs: mean
  if reduction not in LOSS_REDUCTIONS:
    raise ValueError(f"Invalid config.loss: reduction must be one of {LOSS_REDUCTIONS}, "
                     f"got {reduction!r}. Fix it with e.g. --config.loss.reduction=mean.")
  return 2.0 * batch_size if reduction == "sum" else 1.0


def check_loss_config(loss_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for bad loss hyperparameters, before any work is done.

  Traces the loss once on a 2-pair batch (nothing is computed), so the checks
  are exactly the loss's own; the message gets a `config.loss` prefix.
  """
  reduction_scale(loss_config, 1)
  if not isinstance(rsc_snap(loss_config), bool):
    raise ValueError("Invalid config.loss: rsc_snap must be True (snap RSC "
                     "relevance to a 2^-20 grid) or False (raw float32, as the "
                     f"official code), got {rsc_snap(loss_config)!r}.")
  try:
    jax.eval_shape(lambda: losses.listwise_itr_loss(
        jnp.zeros((2, 2)), jnp.ones((2, 2)), **loss_kwargs(loss_config)))
  except ValueError as e:
    # Hint at the field the loss complained about, with its default.
    names = [k for k in loss_kwargs(loss_config) if f"`{k}`" in str(e)] or [
        k for k in loss_kwargs(loss_config) if k in str(e)]
    default = defaults.base_config().loss
    hint = "".join(f" Fix it with e.g. --config.loss.{k}={default[k]}."
                   for k in names[:1])
    raise ValueError(f"Invalid config.loss: {e}{hint}") from e


def batch_loss(model, params, batch: Batch, *, hardest: bool,
               loss_config: ml_collections.ConfigDict, mesh=None):
  """Loss and its parts for one batch; `scores[i, j]` = image i vs caption j.

  With a `mesh` the batch is split over its batch axes and the loss is
  `sharding.global_batch_listwise_loss`: the same value, each device scoring
  only its own query rows against the whole batch.
  """
  (loss, aux), _ = batch_loss_and_state(
      model, params, None, batch, hardest=hardest, loss_config=loss_config,
      mesh=mesh)
  return loss, aux


def batch_loss_and_state(model, params, model_state: Optional[Mapping], batch: Batch,
                         *, hardest: bool, loss_config: ml_collections.ConfigDict,
                         mesh=None):
  """`((loss, aux), new_model_state)`: `batch_loss` for a model with state.

  With a non-empty `model_state` (e.g. BatchNorm statistics) the model runs
  in training mode (`train=True`) with those collections mutable. A
  `region_mask` in the batch (set by region dropping) reaches the image
  encoder.
  """
  inputs = (batch["images"], batch["tokens"], batch["lengths"])
  kwargs = {"region_mask": batch["region_mask"]} if "region_mask" in batch else {}
  if model_state:
    (image_emb, caption_emb), model_state = model.apply(
        {"params": params, **model_state}, *inputs, train=True,
        mutable=list(model_state), **kwargs)
  else:
    image_emb, caption_emb = model.apply({"params": params}, *inputs, **kwargs)
  if mesh is not None:
    return sharding.global_batch_listwise_loss(
        image_emb, caption_emb, batch["image_caption_emb"], batch["caption_emb"],
        mesh=mesh, hardest=hardest, rsc_snap=rsc_snap(loss_config),
        **loss_kwargs(loss_config)), model_state
  scores = image_emb @ caption_emb.T
  relevance = relevance_lib.rsc(batch["image_caption_emb"], batch["caption_emb"],
                                snap=rsc_snap(loss_config))
  return losses.listwise_itr_loss(
      scores, relevance, hardest=hardest, **loss_kwargs(loss_config)), model_state


def scorer_batch_loss(model, variables, batch: Batch, *, hardest: bool,
                      loss_config: ml_collections.ConfigDict, mesh=None,
                      rng=None):
  """(loss, (aux, new batch_stats)) of a cross-attention scorer on one batch.

  Encodes in training mode (dropout from `rng`, BatchNorm batch statistics
  over the global batch), scores the B×B matrix in chunks of captions
  (`scorer.similarity`) and applies the listwise loss; with a `mesh` each
  device scores its own captions against the whole batch
  (`sharding.global_batch_scorer_loss`).
  """
  image_repr, caption_repr, batch_stats = scorer.encode(
      model, variables, batch["images"], batch["tokens"], batch["lengths"],
      train=True, rng=rng)

  def score_fn(variables, image_repr, caption_repr):
    return scorer.similarity(model, variables, image_repr, caption_repr, train=True)

  if mesh is not None:
    loss, aux, score_aux = sharding.global_batch_scorer_loss(
        score_fn, variables, image_repr, caption_repr, batch["image_caption_emb"],
        batch["caption_emb"], mesh=mesh, hardest=hardest,
        rsc_snap=rsc_snap(loss_config), **loss_kwargs(loss_config))
  else:
    scores, score_aux = score_fn(variables, image_repr, caption_repr)
    relevance = relevance_lib.rsc(batch["image_caption_emb"], batch["caption_emb"],
                                  snap=rsc_snap(loss_config))
    loss, aux = losses.listwise_itr_loss(scores, relevance, hardest=hardest,
                                         **loss_kwargs(loss_config))
  return loss, (aux, scorer.merge_batch_stats(model, batch_stats, score_aux))


def make_train_step(model, loss_config: ml_collections.ConfigDict, *,
                    hardest: bool = True, mesh=None, state_sharding=None,
                    augment=None) -> Callable[[TrainState, Batch], tuple]:
  """Returns `train_step(state, batch) -> (state, metrics)`, jit-compiled.

  `hardest=False` gives the sum-over-negatives triplet used for warm-up. The
  input state is donated: its buffers are reused for the new one. A
  `StatefulTrainState`'s `model_state` is updated too. `augment(batch, step)`
  (`augment.make_augment`), if given, transforms the batch first, with
  randomness drawn from the state's step. A cross-attention model
  (`scorer.is_two_tower(model)` False) needs a `ScorerTrainState` and trains
  through `scorer_batch_loss`.

  With a `mesh` (`sharding.create_mesh`), the step is compiled for it: the
  state in and out is placed by `state_sharding` (a tree of NamedShardings,
  `sharding.state_shardings`; default replicated), the batch is split along
  the mesh's batch axes (`sharding.global_batch` builds it), the metrics are
  replicated, and the loss has global-batch semantics (see `batch_loss`).
  The differentiated (and logged) `loss` is scaled by `reduction_scale`
  (config.loss.reduction, B = the global batch); `pairwise`, `listwise` stay
  batch means.
  """

  def train_step(state: TrainState, batch: Batch):
    if augment is not None:
      batch = augment(batch, state.step)
    scale = reduction_scale(loss_config, batch["tokens"].shape[0])
    if scorer.is_two_tower(model):
      model_state = getattr(state, "model_state", None)

      def loss_fn(params):
        (loss, aux), new_model_state = batch_loss_and_state(
            model, params, model_state, batch, hardest=hardest,
            loss_config=loss_config, mesh=mesh)
        return loss * scale, (aux, new_model_state)

      (loss, (aux, new_model_state)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params)
      new_state = state.apply_gradients(grads=grads)
      if model_state:
        new_state = new_state.replace(model_state=new_model_state)
    else:
      rng = jax.random.fold_in(state.dropout_rng, state.step)

      def scorer_loss_fn(params):
        loss, aux = scorer_batch_loss(
            model, {"params": params, "batch_stats": state.batch_stats}, batch,
            hardest=hardest, loss_config=loss_config, mesh=mesh, rng=rng)
        return loss * scale, aux

      (loss, (aux, batch_stats)), grads = jax.value_and_grad(
          scorer_loss_fn, has_aux=True)(state.params)
      new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    metrics = {"loss": loss, **aux, "grad_norm": optax.global_norm(grads)}
    return new_state, jax.tree.map(jnp.asarray, metrics)

  if mesh is None:
    return jax.jit(train_step, donate_argnums=0)
  state_sharding = sharding.replicated(mesh) if state_sharding is None else state_sharding
  return jax.jit(train_step, donate_argnums=0,
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)))
