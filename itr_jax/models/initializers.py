"""Parameter initialisers that reproduce the official PyTorch initialisation."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def symmetric_uniform(limit: float):
  """Initialiser drawing every entry from U(-limit, limit).

  Used for the word embeddings (limit 0.1, as the official code) and, with
  limit 1/sqrt(hidden), for GRU weights like PyTorch's `nn.GRU` default.

  >>> init = symmetric_uniform(0.1)
  >>> w = init(jax.random.key(0), (3, 4))
  >>> bool(jnp.all(jnp.abs(w) <= 0.1))
  True
  """
  if not limit > 0:
    raise ValueError(f"limit must be positive, got {limit!r}.")

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, minval=-limit, maxval=limit)

  return init


def scaled_normal(stddev: float):
  """Initialiser drawing every entry from N(0, stddev²), like flax's `normal`.

  The scaling stays a separate operation when the whole initialisation is
  jit-compiled (an optimization barrier): XLA would otherwise fold `stddev`
  into the sampler's own constant and round differently, so jitted and eager
  initialisation give the same bits.

  >>> init = scaled_normal(0.02)
  >>> key = jax.random.key(0)
  >>> bool(jnp.array_equal(jax.jit(init, static_argnums=1)(key, (3, 4)), init(key, (3, 4))))
  True
  """
  if not stddev > 0:
    raise ValueError(f"stddev must be positive, got {stddev!r}.")

  def init(key, shape, dtype=jnp.float32):
    return jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype)) * jnp.asarray(
        stddev, dtype)

  return init
