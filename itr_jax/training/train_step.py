"""The jit-compiled train step: encode, score, RSC relevance, listwise loss, update.

One path for every model and device count:

  scorer.encode (train mode, the step's rng, mutable collections)
  -> sharding.global_batch_loss (scorer.query_scores: dot products or
     chunked cross-attention; RSC relevance rows; losses.listwise_loss_of_rows)
  -> gradient, optimizer update, the model's updated collections.
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from itr_jax import losses
from itr_jax import sharding
from itr_jax.models import scorer
from itr_jax.training import defaults
from itr_jax.training.state import TrainState

Batch = Mapping[str, jax.Array]


def check_loss_config(loss_config: ml_collections.ConfigDict) -> losses.LossOptions:
  """`LossOptions` of `config.loss`; ValueError for bad values, before any work.

  Traces the loss once on a 2-pair batch (nothing is computed), so the checks
  are exactly the loss's own; the message gets a `config.loss` prefix and
  names the field's default.
  """
  try:
    options = losses.LossOptions.from_config(loss_config)
    jax.eval_shape(lambda: losses.listwise_itr_loss(jnp.zeros((2, 2)), jnp.ones((2, 2)),
                                                    options))
  except ValueError as e:
    default = defaults.base_config().loss
    names = [k for k in default if f"`{k}`" in str(e)] or [
        k for k in default if k in str(e)]
    hint = "".join(f" Fix it with e.g. --config.loss.{k}={default[k]}."
                   for k in names[:1])
    raise ValueError(f"Invalid config.loss: {e}{hint}") from e
  return options


def logit_options(params, options: losses.LossOptions) -> losses.LossOptions:
  """`options` with the model's learnable logit scale / bias, for "infonce" / "sigmoid"."""
  if options.pairwise == "triplet":
    return options
  if "logit_scale" not in params:
    raise ValueError(f"config.loss.pairwise={options.pairwise!r} needs a model with a "
                     "learnable temperature (model.name 'clip' or 'siglip'); use "
                     "loss.pairwise='triplet' for this model.")
  return options.replace(**{k: params[k] for k in ("logit_scale", "logit_bias") if k in params})


def batch_loss(model, variables, batch: Batch, *, options: losses.LossOptions,
               rng: Optional[jax.Array] = None, mesh=None):
  """(loss, (aux, model_state)) of one batch; `scores[i, j]` = image i vs caption j.

  Encodes in training mode (dropout from `rng`; collections other than
  `params`, e.g. BatchNorm statistics over the global batch, updated and
  returned as `model_state`), then `sharding.global_batch_loss`: on one
  device (`mesh` None) or with the batch split over the mesh's batch axes,
  the same value. A `region_mask` in the batch (region dropping) reaches
  the image encoder.
  """
  options = logit_options(variables["params"], options)
  image_repr, caption_repr, variables = scorer.encode(
      model, variables, batch["images"], batch["tokens"], batch["lengths"],
      region_mask=batch.get("region_mask"), train=True, rng=rng)
  # Dot products need no variables: none enter the loss's shard_map.
  score_variables = None if scorer.is_two_tower(model) else variables
  loss, aux, score_aux = sharding.global_batch_loss(
      functools.partial(scorer.query_scores, model, train=True), score_variables,
      image_repr, caption_repr, batch["image_caption_emb"], batch["caption_emb"],
      options=options, mesh=mesh)
  variables = scorer.merge_similarity_state(model, variables, score_aux)
  return loss, (aux, {k: v for k, v in variables.items() if k != "params"})


def make_train_step(model, options: losses.LossOptions, *, mesh=None,
                    state_sharding=None, augment=None) -> Callable[[TrainState, Batch], tuple]:
  """Returns `train_step(state, batch) -> (state, metrics)`, jit-compiled.

  `options.hardest=False` gives the sum-over-negatives triplet used for
  warm-up. The input state is donated: its buffers are reused for the new
  one. `augment(batch, step)` (`augment.make_augment`), if given, transforms
  the batch first, with randomness drawn from the state's step.

  With a `mesh` (`sharding.create_mesh`), the step is compiled for it: the
  state in and out is placed by `state_sharding` (a tree of NamedShardings,
  `sharding.state_shardings`; default replicated), the batch is split along
  the mesh's batch axes (`sharding.global_batch` builds it), the metrics are
  replicated, and the loss has global-batch semantics (see `batch_loss`).
  """

  def train_step(state: TrainState, batch: Batch):
    if augment is not None:
      batch = augment(batch, state.step)
    rng = state.step_rng()

    def loss_fn(params):
      return batch_loss(model, {**state.variables(), "params": params}, batch,
                        options=options, rng=rng, mesh=mesh)

    (loss, (aux, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads, model_state=model_state)
    metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
    return new_state, jax.tree.map(jnp.asarray, metrics)

  if mesh is None:
    return jax.jit(train_step, donate_argnums=0)
  state_sharding = sharding.replicated(mesh) if state_sharding is None else state_sharding
  return jax.jit(train_step, donate_argnums=0,
                 in_shardings=(state_sharding, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sharding, sharding.replicated(mesh)))
