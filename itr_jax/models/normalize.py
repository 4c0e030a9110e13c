"""L2 normalisation into the joint embedding space."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  r"""Scales `x` to unit L2 norm along `axis`, as the official `l2norm`.

  .. math:: \hat x = x / (\sqrt{\textstyle\sum_i x_i^2} + \epsilon)

  The epsilon is added to the norm (not inside the root) to match the official
  code. The squared norm is floored at the smallest normal float before the
  root so that the gradient at x = 0 is finite; the value is unchanged.
  Computed and returned in float32 (scores and losses need the precision).

  >>> l2_normalize(jnp.array([3.0, 4.0]))
  Array([0.6, 0.8], dtype=float32)
  """
  x = x.astype(jnp.float32)
  squared = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  norm = jnp.sqrt(jnp.maximum(squared, jnp.finfo(jnp.float32).tiny))
  return x / (norm + eps)
