"""Mean pooling of token states over the real (unmasked) tokens."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
  r"""Average of the token states whose mask is set, as sentence-transformers.

  .. math:: e_b = \frac{\sum_t m_{bt} h_{bt}}{\max(\sum_t m_{bt}, 10^{-9})}

  A row with no real token pools to zeros (the floor avoids 0/0). Returns
  float32.

  >>> h = jnp.array([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
  >>> mean_pool(h, jnp.array([[1, 1, 0]]))
  Array([[2., 3.]], dtype=float32)
  """
  if hidden.ndim != 3 or attention_mask.shape != hidden.shape[:2]:
    raise ValueError(f"hidden must be [B, L, D] and attention_mask [B, L]; got "
                     f"{hidden.shape} and {attention_mask.shape}")
  mask = attention_mask.astype(jnp.float32)[..., None]
  total = jnp.sum(hidden.astype(jnp.float32) * mask, axis=1)
  return total / jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
