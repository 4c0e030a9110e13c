"""Pooling a set of region features [B, R, D] into one vector per image [B, D]."""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itr_jax.models.gru import GRU
from itr_jax.models.initializers import symmetric_uniform

Dtype = Any


def _check_mask(features: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  if features.ndim != 3:
    raise ValueError("features must be [batch, regions, dim], got shape "
                     f"{features.shape}.")
  if mask is None:
    return jnp.ones(features.shape[:2], bool)
  if mask.shape != features.shape[:2]:
    raise ValueError(f"mask must have shape {features.shape[:2]} (batch, "
                     f"regions), got {mask.shape}.")
  return mask.astype(bool)


def max_pool(features: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
  r"""Per-dimension maximum over the valid regions (VSE++).

  .. math:: v_d = \max_{r:\, m_r = 1} f_{r,d}

  `mask` [B, R] (True = valid) excludes padded regions; every row needs at
  least one valid region. Gradients flow to the arg-max region.

  >>> f = jnp.array([[[1., 5.], [3., 2.], [9., 9.]]])
  >>> max_pool(f, jnp.array([[True, True, False]]))
  Array([[3., 5.]], dtype=float32)
  """
  mask = _check_mask(features, mask)
  lowest = jnp.finfo(features.dtype).min
  return jnp.max(jnp.where(mask[..., None], features, lowest), axis=1)


def positional_encoding(length: int, dim: int) -> jax.Array:
  r"""Sinusoidal position encodings [length, dim] (Vaswani et al., 2017).

  .. math:: PE_{p, 2i} = \sin(p / 10000^{2i/d}), \quad
            PE_{p, 2i+1} = \cos(p / 10000^{2i/d})

  >>> positional_encoding(2, 2).round(4)
  Array([[0.    , 1.    ],
         [0.8415, 0.5403]], dtype=float32)
  """
  if dim % 2:
    raise ValueError(f"dim must be even for sin/cos pairs, got {dim}.")
  position = jnp.arange(length, dtype=jnp.float32)[:, None]
  frequency = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32)
                      * (-math.log(10000.0) / dim))
  angle = position * frequency  # [length, dim / 2]
  return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(
      length, dim)


def sort_descending(features: jax.Array, mask: jax.Array) -> jax.Array:
  """Sorts each feature dimension over the valid regions, largest first.

  Position k of the output holds the k-th largest valid value of that
  dimension; positions k >= (number of valid regions) are 0.

  >>> f = jnp.array([[[1., 5.], [3., 2.], [9., 9.]]])
  >>> sort_descending(f, jnp.array([[True, True, False]]))
  Array([[[3., 5.],
          [1., 2.],
          [0., 0.]]], dtype=float32)
  """
  lowest = jnp.finfo(features.dtype).min
  ordered = -jnp.sort(-jnp.where(mask[..., None], features, lowest), axis=1)
  count = jnp.sum(mask, axis=1)
  rank = jnp.arange(features.shape[1])[None, :, None]
  return jnp.where(rank < count[:, None, None], ordered, 0)


class GPO(nn.Module):
  r"""Generalized Pooling Operator (Chen et al., VSE-infinity, CVPR 2021).

  Each feature dimension is sorted over the valid regions (largest first) and
  the k-th largest values are mixed with weights that depend only on k and the
  number n of valid regions:

  .. math::
      \theta_k = \mathrm{softmax}_k\big(w^\top \mathrm{BiGRU}(PE_{1..n})_k
      / T\big), \qquad v_d = \sum_{k \le n} \theta_k \, \mathrm{sort}_\downarrow(f_{:,d})_k

  PE are `pe_dim` sinusoidal position encodings, the bi-GRU (`hidden` units,
  directions averaged) reads positions 0..n-1, w has no bias and T is the
  temperature 0.1. Max pooling (θ one-hot on k=1) and mean pooling (θ = 1/n)
  are special cases.

  `__call__(features [B, R, D], mask [B, R] | None) -> (pooled [B, D],
  weights [B, R])`; weights are 0 on k >= n and sum to 1. `mask` (True =
  valid, any pattern) must leave at least one valid region per row.

  >>> gpo = GPO()
  >>> f = jnp.ones((2, 4, 3))
  >>> params = gpo.init(jax.random.key(0), f)
  >>> pooled, weights = gpo.apply(params, f)
  >>> pooled.shape, weights.shape
  ((2, 3), (2, 4))
  """
  pe_dim: int = 32
  hidden: int = 32
  temperature: float = 0.1
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, mask=None):
    mask = _check_mask(features, mask)
    batch, regions, _ = features.shape
    count = jnp.sum(mask, axis=1).astype(jnp.int32)
    valid = jnp.arange(regions)[None, :] < count[:, None]  # rank k < n
    pe = jnp.where(valid[..., None], positional_encoding(regions, self.pe_dim), 0)
    states, _ = GRU(self.hidden, bidirectional=True, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="gru")(pe, count)
    scores = nn.Dense(
        1, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
        # PyTorch's nn.Linear default, U(-1/sqrt(in), 1/sqrt(in)).
        kernel_init=symmetric_uniform(1.0 / self.hidden ** 0.5),
        name="score")(states)[..., 0].astype(jnp.float32)
    weights = jax.nn.softmax(
        jnp.where(valid, scores / self.temperature, -jnp.inf), axis=1)
    pooled = jnp.sum(sort_descending(features, mask) * weights[..., None].astype(
        features.dtype), axis=1)
    return pooled, weights


POOLINGS = ("max", "gpo")
