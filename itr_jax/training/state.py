"""The train state of every model, and the older checkpoint layouts it restores from.

`TrainState` is flax's `TrainState` (step, params, opt_state, tx) plus

* `model_state`: the model's collections other than `params` (e.g.
  BatchNorm's `batch_stats`; `{}` for a model without any), updated by the
  train step, saved in checkpoints, used by evaluation;
* `rng`: the key of the step's randomness (dropout); step s draws from
  `fold_in(rng, s)`, so a resumed run draws the same masks.

Checkpoints written before this state existed have one of three layouts
(`LEGACY_LAYOUTS`); `restore_target` gives what to restore such a checkpoint
into and how to turn it into a `TrainState`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax
import jax
from flax.training import train_state

# Top-level keys of the older checkpoints: flax's plain TrainState (VSE++),
# StatefulTrainState (VSE-infinity: + model_state) and ScorerTrainState
# (SGR/SAF: + batch_stats, dropout_rng).
LEGACY_LAYOUTS = {
    "plain": frozenset({"step", "params", "opt_state"}),
    "stateful": frozenset({"step", "params", "opt_state", "model_state"}),
    "scorer": frozenset({"step", "params", "opt_state", "batch_stats", "dropout_rng"}),
}
# The older two-tower states had no key (their models draw no randomness in
# the step); a restored one gets this seed's key.
LEGACY_RNG_SEED = 0


class TrainState(train_state.TrainState):
  """Parameters, optimizer state, the model's other variables and an RNG key.

  >>> import jax.numpy as jnp, optax
  >>> s = TrainState.create(apply_fn=None, params={"w": jnp.ones(2)}, tx=optax.sgd(0.1),
  ...                       model_state={"batch_stats": {"mean": jnp.zeros(2)}},
  ...                       rng=jax.random.PRNGKey(0))
  >>> sorted(s.variables())
  ['batch_stats', 'params']
  """
  model_state: Any = flax.struct.field(pytree_node=True, default_factory=dict)
  rng: Any = None

  def variables(self) -> dict:
    """`{"params": ..., **model_state}`: what `model.apply` takes."""
    return {"params": self.params, **self.model_state}

  def step_rng(self) -> Optional[jax.Array]:
    """The key of this step's randomness (None without a key)."""
    return None if self.rng is None else jax.random.fold_in(self.rng, self.step)


def initial_rng(seed: int) -> jax.Array:
  """The state's key for `config.seed` (the one SGR/SAF states always had)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def restore_target(saved_keys, abstract: TrainState) -> tuple[Any, Callable]:
  """(what to restore into, how to make a TrainState of the result).

  `saved_keys`: the top-level keys of the checkpoint; `abstract`: the state
  (ShapeDtypeStructs, with shardings) this run restores into. A checkpoint
  of today's layout restores into `abstract` unchanged; one of an older
  layout into a dict of that layout, then converted.
  """
  saved_keys = frozenset(saved_keys)
  if not isinstance(abstract, TrainState) or saved_keys not in LEGACY_LAYOUTS.values():
    return abstract, lambda restored: restored
  common = {"step": abstract.step, "params": abstract.params,
            "opt_state": abstract.opt_state}
  if saved_keys == LEGACY_LAYOUTS["scorer"]:
    target = {**common, "batch_stats": abstract.model_state.get("batch_stats", {}),
              "dropout_rng": abstract.rng}
    return target, lambda r: abstract.replace(
        step=r["step"], params=r["params"], opt_state=r["opt_state"],
        model_state={**abstract.model_state, "batch_stats": r["batch_stats"]},
        rng=r["dropout_rng"])
  if saved_keys == LEGACY_LAYOUTS["stateful"]:
    target = {**common, "model_state": abstract.model_state}
  elif jax.tree.leaves(abstract.model_state):
    # A plain state has no variables besides params: not this model's.
    return abstract, lambda restored: restored
  else:
    target = common

  def convert(r):
    rng = initial_rng(LEGACY_RNG_SEED)
    if getattr(abstract.rng, "sharding", None) is not None:
      rng = jax.device_put(rng, abstract.rng.sharding)
    return abstract.replace(step=r["step"], params=r["params"], opt_state=r["opt_state"],
                            model_state=r.get("model_state", {}), rng=rng)
  return target, convert
