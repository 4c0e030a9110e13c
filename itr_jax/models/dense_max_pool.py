"""A Dense projection max-pooled over regions, with a sparse weight gradient.

Projecting every region and then taking the maximum (the VSE++ image tower)
costs B·R·F·E multiply-adds forward; plain autodiff spends the same again on
the weight gradient `Xᵀ·dY`, although after the max only one region per
(image, output unit) receives gradient. Here the gradient gathers those
winning regions instead: B·E·F multiply-adds, R times (36x) fewer.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itr_jax.models.pooling import _check_mask

Dtype = Any


def dense_max_pool(features: jax.Array, kernel: jax.Array,
                   bias: Optional[jax.Array] = None,
                   mask: Optional[jax.Array] = None, *,
                   precision: Any = None) -> jax.Array:
  r"""Max over the valid regions of a Dense projection of each region.

  .. math:: v_{b,e} = \max_{r:\, m_{b,r} = 1} \textstyle\sum_f x_{b,r,f}
            W_{f,e} + c_e

  Equals `max_pool(features @ kernel + bias, mask)`; computed without the
  [B, R, E] projections in memory (a loop over regions keeps a running
  maximum) and with a custom VJP that, from the winning region
  :math:`r^*_{b,e}` of each output, gathers

  .. math:: \partial W_{f,e} = \textstyle\sum_b g_{b,e}\, x_{b, r^*_{b,e}, f},
            \qquad \partial x_{b,r,f} = \textstyle\sum_{e:\, r^*_{b,e} = r}
            g_{b,e} W_{f,e}

  (the bias gradient, :math:`\sum_b g_{b,e}`, is plain autodiff: the bias
  is added after the maximum, which is exact since rounding is monotone).
  The feature gradient is computed only when `features` are differentiated.

  Ties: the winner is the first (lowest-index) valid region attaining the
  maximum, so a tied output sends all of its gradient there (as
  `torch.max(dim)` does), whereas JAX's autodiff of `jnp.max` splits it
  equally among the tied regions. The kernel gradients agree whenever the
  tied regions have identical features (e.g. duplicated or all-zero padding
  regions left unmasked); ties between different features have probability
  zero for real-valued features. A NaN projection wins (propagates) as in
  `jnp.max`.

  Args:
    features: region features [B, R, F].
    kernel: [F, E].
    bias: [E] or None.
    mask: [B, R], True = valid region, or None (all valid). Each row needs at
      least one valid region (an all-masked row gives the dtype's lowest
      value).
    precision: passed to the projection matmul, as `nn.Dense`'s.

  Returns:
    [B, E] in the result dtype of `features` and `kernel`.

  >>> x = jnp.array([[[1., 0.], [0., 2.], [5., 5.]]])  # B=1, R=3, F=2
  >>> w = jnp.array([[1., -1.], [1., 1.]])
  >>> dense_max_pool(x, w, jnp.array([0., 10.]))  # rows: [1,-1],[2,2],[10,0]
  Array([[10., 12.]], dtype=float32)
  >>> dense_max_pool(x, w, mask=jnp.array([[True, True, False]]))
  Array([[2., 2.]], dtype=float32)
  """
  mask = _check_mask(features, mask)
  if kernel.ndim != 2 or kernel.shape[0] != features.shape[-1]:
    raise ValueError(f"kernel must be [features dim, out] = "
                     f"[{features.shape[-1]}, E], got shape {kernel.shape}.")
  if bias is not None and bias.shape != kernel.shape[1:]:
    raise ValueError(f"bias must have shape {kernel.shape[1:]} (the kernel's "
                     f"output dim), got {bias.shape}.")
  pooled = _dense_max(features, kernel, mask, precision)
  return pooled if bias is None else pooled + bias


def _running_max(features, kernel, mask, precision):
  """(max [B, E], first arg-max region int32 [B, E]), one region at a time.

  A scan over regions of [B, F] x [F, E] matmuls measured 20-35% less CPU
  time than one [B·R, F] x [F, E] matmul followed by a max/arg-max over the
  [B, R, E] result (which never stays in cache at B >= 128).
  """
  batch, _, _ = features.shape
  dtype = jnp.result_type(features, kernel)
  lowest = jnp.finfo(dtype).min

  def step(carry, inputs):
    best, winner = carry
    r, valid = inputs
    x = jax.lax.dynamic_index_in_dim(features, r, axis=1, keepdims=False)
    y = jnp.where(valid[:, None],
                  jnp.dot(x, kernel, precision=precision).astype(dtype), lowest)
    # Strict '>' keeps the first maximum; a NaN wins once and then stays.
    better = (y > best) | (jnp.isnan(y) & ~jnp.isnan(best))
    return (jnp.where(better, y, best), jnp.where(better, r, winner)), None

  init = (jnp.full((batch, kernel.shape[1]), lowest, dtype),
          jnp.zeros((batch, kernel.shape[1]), jnp.int32))
  regions = jnp.arange(features.shape[1], dtype=jnp.int32)
  (best, winner), _ = jax.lax.scan(step, init, (regions, mask.T))
  return best, winner


def _kernel_grad(features, winner, g, kernel_dtype):
  r"""dW [F, E] = Σ_b g[b, e] x[b, winner[b, e]] as a scan over the batch.

  Each step adds g[b] ⊙ x[b][winner[b]] ([E, F]) to an [E, F] accumulator in
  one fused gather-multiply-add, so nothing larger than dW is ever in memory.
  Measured on a 2-core CPU at the paper's sizes, this takes 22 ms (B = 128)
  where the dense `Xᵀ·dY` takes ~100 ms; gathering [B, c, F] blocks for
  chunks of c outputs and contracting them with an einsum takes 100-240 ms
  (the gathered blocks round-trip through memory).
  """
  acc_dtype = jnp.promote_types(g.dtype, jnp.float32)  # sum B terms in f32+

  def step(acc, inputs):
    x, win, g_b = inputs  # [R, F], [E], [E]
    return acc + g_b[:, None].astype(acc_dtype) * x[win].astype(acc_dtype), None

  init = jnp.zeros((winner.shape[1], features.shape[2]), acc_dtype)
  acc, _ = jax.lax.scan(step, init, (features, winner, g))
  return acc.T.astype(kernel_dtype)


def _features_grad(kernel, winner, g, regions, precision):
  """dx [B, R, F]: each output's cotangent times its kernel column, at r*."""
  won = winner[:, None, :] == jnp.arange(regions)[None, :, None]  # [B, R, E]
  routed = jnp.where(won, g[:, None, :], jnp.zeros((), g.dtype))
  return jnp.einsum("bre,fe->brf", routed, kernel, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _dense_max(features, kernel, mask, precision):
  return _running_max(features, kernel, mask, precision)[0]


def _dense_max_fwd(features, kernel, mask, precision):
  # symbolic_zeros: each array argument arrives as (value, perturbed).
  best, winner = _running_max(features.value, kernel.value, mask.value,
                              precision)
  return best, (features.value, kernel.value, winner, features.perturbed)


def _dense_max_bwd(precision, residuals, g):
  features, kernel, winner, features_perturbed = residuals
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return None, None, None
  g = g.astype(jnp.result_type(features, kernel))
  d_kernel = _kernel_grad(features, winner, g, kernel.dtype)
  d_features = None
  if features_perturbed:
    d_features = _features_grad(kernel, winner, g, features.shape[1],
                                precision).astype(features.dtype)
  return d_features, d_kernel, None


_dense_max.defvjp(_dense_max_fwd, _dense_max_bwd, symbolic_zeros=True)


class DenseMaxPool(nn.Module):
  """`nn.Dense(features)` on each region, then `max_pool`, as one op.

  Parameters are `kernel` [F, features] and `bias` [features], with the same
  names, shapes, initialisers and init random numbers as `nn.Dense` under the
  same module name, so the two are interchangeable on one param tree.
  `__call__(inputs [B, R, F], mask [B, R] | None) -> [B, features]` computes
  `dense_max_pool` in `dtype` (None: the inputs' and params' dtype).

  >>> layer = DenseMaxPool(4)
  >>> x = jnp.ones((2, 3, 5))
  >>> params = layer.init(jax.random.key(0), x)
  >>> jax.tree.map(jnp.shape, params)["params"]
  {'bias': (4,), 'kernel': (5, 4)}
  >>> layer.apply(params, x).shape
  (2, 4)
  """
  features: int
  use_bias: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  precision: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, inputs: jax.Array,
               mask: Optional[jax.Array] = None) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init,
                        (inputs.shape[-1], self.features), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    inputs, kernel, bias = nn.dtypes.promote_dtype(inputs, kernel, bias,
                                                   dtype=self.dtype)
    return dense_max_pool(inputs, kernel, bias, mask, precision=self.precision)
