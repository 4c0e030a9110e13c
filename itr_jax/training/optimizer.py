"""Adam with global-norm clipping and a step-decayed learning rate.

The official recipe: `torch.optim.Adam(lr=5e-4)`, `clip_grad_norm_(params, 2.0)`
and `lr = 5e-4 * 0.1 ** (epoch // lr_update)`. Fields of `config.optim`:

* `learning_rate` (5e-4): the initial learning rate.
* `grad_clip` (2.0): max global L2 norm of the gradient; None or 0 disables.
* `lr_update` (10): epochs between decays.
* `lr_decay` (0.1): factor applied every `lr_update` epochs.
* `lr_schedule` ("repeat"): "repeat" decays every `lr_update` epochs
  (Listwise_ITR, SGRAF: `0.1 ** (epoch // lr_update)`); "once" decays once,
  at epoch `lr_update` (VSE-infinity: `if epoch in lr_schedules`).
* `lr_multipliers` (optional, default none): `{module name: factor}`, e.g.
  `{"text_encoder": 0.1}` for a pretrained text tower. A parameter whose path
  contains the name gets `factor` x the learning rate.
* `name` ("adam"): "adam", or "adamw" (VSE-infinity: `torch.optim.AdamW`).
* `weight_decay` (0.0): AdamW's decoupled weight decay, scaled by the
  (per-module) learning rate like PyTorch's; "adam" needs 0.
* `decay_mask` ("all"): which parameters decay: "all" (PyTorch's AdamW on
  every parameter), or "matrices": weight matrices only, no decay on norms,
  biases, embeddings (token / position / class token / MAP probe) and the
  logit scale and bias (`decays`), as CLIP / SigLIP fine-tuning recipes.
"""
from __future__ import annotations

from typing import Mapping

import jax
import ml_collections
import numpy as np
import optax

OPTIM_FIELDS = ("learning_rate", "grad_clip", "lr_update", "lr_decay",
                "lr_schedule", "lr_multipliers", "name", "weight_decay", "decay_mask")
DECAY_MASKS = ("all", "matrices")
# Leaf names that are embeddings (or temperatures), never decayed under "matrices".
_NO_DECAY_NAMES = ("embedding", "pos_embed", "cls", "probe", "logit_scale", "logit_bias")
OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("repeat", "once")


def _check(config: ml_collections.ConfigDict, steps_per_epoch: int):
  if "optim" in config and "learning_rate" not in config:
    raise ValueError("Pass the config.optim subtree, e.g. "
                     "create_optimizer(config.optim, steps_per_epoch).")
  unknown = sorted(set(config) - set(OPTIM_FIELDS))
  if unknown:
    raise ValueError(f"Unknown config.optim field(s) {unknown}; known fields "
                     f"are {list(OPTIM_FIELDS)}.")
  if not (isinstance(steps_per_epoch, int) and steps_per_epoch > 0):
    raise ValueError("steps_per_epoch must be a positive int (batches per "
                     f"epoch), got {steps_per_epoch!r}.")
  if not config.learning_rate > 0:
    raise ValueError("config.optim.learning_rate must be positive, got "
                     f"{config.learning_rate!r}.")
  if not (isinstance(config.lr_update, int) and config.lr_update > 0):
    raise ValueError("config.optim.lr_update must be a positive int number "
                     f"of epochs, got {config.lr_update!r}.")
  if not 0 < config.lr_decay <= 1:
    raise ValueError("config.optim.lr_decay must be in (0, 1] (1: no decay), "
                     f"got {config.lr_decay!r}.")
  if config.get("lr_schedule", "repeat") not in LR_SCHEDULES:
    raise ValueError(f"config.optim.lr_schedule must be one of {LR_SCHEDULES}, got "
                     f"{config.lr_schedule!r}.")
  name, weight_decay = config.get("name", "adam"), config.get("weight_decay", 0.0)
  if name not in OPTIMIZERS:
    raise ValueError(f"config.optim.name must be one of {OPTIMIZERS}, got "
                     f"{name!r}.")
  if not weight_decay >= 0:
    raise ValueError("config.optim.weight_decay must be >= 0, got "
                     f"{weight_decay!r}.")
  if name == "adam" and weight_decay:
    raise ValueError("config.optim.weight_decay needs config.optim.name="
                     "'adamw' (decoupled decay, as VSE-infinity's AdamW).")
  if config.get("decay_mask", "all") not in DECAY_MASKS:
    raise ValueError(f"config.optim.decay_mask must be one of {DECAY_MASKS}, got "
                     f"{config.get('decay_mask')!r}.")
  grad_clip = config.get("grad_clip")
  if grad_clip is not None and grad_clip < 0:
    raise ValueError("config.optim.grad_clip must be >= 0 (0 or None: no "
                     f"clipping), got {grad_clip!r}.")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a bad `config.optim` (before any work is done)."""
  _check(config, 1)


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           steps_per_epoch: int) -> optax.Schedule:
  r"""Step decay by optimizer step: the official per-epoch `adjust_learning_rate`.

  .. math:: \eta(s) = \eta_0 \cdot d^{\lfloor s / (u \cdot S) \rfloor}
            = \eta_0 \cdot d^{\lfloor e / u \rfloor}, \quad
            e = \lfloor s / S \rfloor

  with s the optimizer step (0-based), S = `steps_per_epoch`, u = `lr_update`
  epochs and d = `lr_decay`; with `lr_schedule="once"` the exponent stops at
  1: :math:`\eta_0 \cdot d^{[e \ge u]}` (VSE-infinity).

  >>> cfg = ml_collections.ConfigDict(dict(
  ...     learning_rate=5e-4, grad_clip=2.0, lr_update=10, lr_decay=0.1))
  >>> schedule = learning_rate_schedule(cfg, steps_per_epoch=100)
  >>> [round(float(schedule(s)), 7) for s in (0, 999, 1000, 2000)]
  [0.0005, 0.0005, 5e-05, 5e-06]
  >>> cfg.lr_schedule = "once"
  >>> schedule = learning_rate_schedule(cfg, steps_per_epoch=100)
  >>> [round(float(schedule(s)), 7) for s in (0, 999, 1000, 2000)]
  [0.0005, 0.0005, 5e-05, 5e-05]
  """
  _check(config, steps_per_epoch)
  boundary = config.lr_update * steps_per_epoch
  if config.get("lr_schedule", "repeat") == "once":
    return optax.piecewise_constant_schedule(
        config.learning_rate, {boundary: config.lr_decay})
  return optax.exponential_decay(
      init_value=config.learning_rate, transition_steps=boundary,
      decay_rate=config.lr_decay, staircase=True)


def _multiplier_labels(multipliers: Mapping[str, float]):
  """Label fn for optax.multi_transform: a parameter's multiplier name."""

  def labels(params):
    used = set()

    def label(path, _):
      names = [getattr(k, "key", getattr(k, "name", None)) for k in path]
      hits = [n for n in names if n in multipliers]
      if hits:
        used.add(hits[0])
        return hits[0]
      return "__default__"

    tree = jax.tree_util.tree_map_with_path(label, params)
    missing = sorted(set(multipliers) - used)
    if missing:
      raise ValueError(f"config.optim.lr_multipliers names {missing}, which "
                       "match no parameter path; use module names such as "
                       "'image_encoder' or 'text_encoder'.")
    return tree

  return labels


def decays(params):
  """True for the leaves "matrices" decays: kernels of rank >= 2, not embeddings.

  >>> decays({"fc": {"kernel": np.ones((2, 3)), "bias": np.ones(3)},
  ...         "token_embed": {"embedding": np.ones((5, 2))}, "logit_scale": np.ones(())})
  {'fc': {'bias': False, 'kernel': True}, 'logit_scale': False, 'token_embed': {'embedding': False}}
  """
  def leaf(path, x):
    names = [str(getattr(k, "key", getattr(k, "name", ""))) for k in path]
    return bool(np.ndim(x) >= 2 and not any(n in _NO_DECAY_NAMES for n in names))

  return jax.tree_util.tree_map_with_path(leaf, params)


def create_optimizer(config: ml_collections.ConfigDict,
                     steps_per_epoch: int) -> optax.GradientTransformation:
  r"""Clip by global norm, then Adam (+ weight decay), then the (per-module) learning rate.

  `config` is the `config.optim` subtree. Clipping uses the norm of the whole
  gradient (as `torch.nn.utils.clip_grad_norm_`), before Adam's moments.
  Adam's b1 = 0.9, b2 = 0.999, eps = 1e-8 are PyTorch's defaults. With
  "adamw", :math:`\theta \leftarrow \theta - \eta\,(\hat m / (\sqrt{\hat v} + \epsilon)
  + \lambda \theta)`, PyTorch's AdamW (decay applied to every parameter).

  >>> import jax.numpy as jnp
  >>> cfg = ml_collections.ConfigDict(dict(
  ...     learning_rate=5e-4, grad_clip=2.0, lr_update=10, lr_decay=0.1))
  >>> tx = create_optimizer(cfg, steps_per_epoch=100)
  >>> params = {"w": jnp.ones(3)}
  >>> updates, state = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
  >>> updates["w"].round(6)  # Adam's first step is -lr * sign(g)
  Array([-0.0005, -0.0005, -0.0005], dtype=float32)
  """
  schedule = learning_rate_schedule(config, steps_per_epoch)
  grad_clip = config.get("grad_clip")
  clip = (optax.clip_by_global_norm(grad_clip) if grad_clip
          else optax.identity())
  multipliers = dict(config.get("lr_multipliers") or {})
  if not multipliers:
    step = optax.scale_by_learning_rate(schedule)
  else:
    for name, factor in multipliers.items():
      if not factor >= 0:
        raise ValueError(f"config.optim.lr_multipliers[{name!r}] must be >= 0, "
                         f"got {factor!r}.")
    # Adam is elementwise, so only the learning-rate scaling is split.
    transforms = {
        name: optax.scale_by_learning_rate(
            lambda count, f=factor: f * schedule(count))
        for name, factor in multipliers.items()}
    transforms["__default__"] = optax.scale_by_learning_rate(schedule)
    step = optax.multi_transform(transforms, _multiplier_labels(multipliers))
  weight_decay = config.get("weight_decay", 0.0)
  # No decay stage at 0, so the optimizer state (and checkpoints) of Adam
  # runs keep their structure.
  mask = decays if config.get("decay_mask", "all") == "matrices" else None
  decay = [optax.add_decayed_weights(weight_decay, mask=mask)] if weight_decay else []
  return optax.chain(clip, optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
                     *decay, step)
