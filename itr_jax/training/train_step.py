"""The jit-compiled train step: encode, score, RSC relevance, listwise loss, update."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from itr_jax import losses
from itr_jax import relevance as relevance_lib

Batch = Mapping[str, jax.Array]
TrainState = train_state.TrainState


def loss_kwargs(loss_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `listwise_itr_loss` keyword arguments named by `config.loss`."""
  return dict(margin=loss_config.margin, tau=loss_config.tau,
              weight=loss_config.weight,
              t2i_relevance=loss_config.t2i_relevance, idcg=loss_config.idcg)


def batch_loss(model, params, batch: Batch, *, hardest: bool,
               loss_config: ml_collections.ConfigDict):
  """Loss and its parts for one batch; `scores[i, j]` = image i vs caption j."""
  image_emb, caption_emb = model.apply(
      {"params": params}, batch["images"], batch["tokens"], batch["lengths"])
  scores = image_emb @ caption_emb.T
  relevance = relevance_lib.rsc(batch["image_caption_emb"], batch["caption_emb"])
  return losses.listwise_itr_loss(
      scores, relevance, hardest=hardest, **loss_kwargs(loss_config))


def make_train_step(model, loss_config: ml_collections.ConfigDict, *,
                    hardest: bool = True) -> Callable[[TrainState, Batch], tuple]:
  """Returns `train_step(state, batch) -> (state, metrics)`, jit-compiled.

  `hardest=False` gives the sum-over-negatives triplet used for warm-up. The
  input state is donated: its buffers are reused for the new one.
  """

  def train_step(state: TrainState, batch: Batch):
    def loss_fn(params):
      return batch_loss(model, params, batch, hardest=hardest,
                        loss_config=loss_config)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(grads=grads)
    metrics = {"loss": loss, **aux, "grad_norm": optax.global_norm(grads)}
    return new_state, jax.tree.map(jnp.asarray, metrics)

  return jax.jit(train_step, donate_argnums=0)
