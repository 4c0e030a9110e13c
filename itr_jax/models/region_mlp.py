"""VSE-infinity's residual region MLP (its precomputed "basic" image encoder)."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itr_jax.models.initializers import symmetric_uniform

Dtype = Any


def torch_linear(features: int, in_features: int, *, name: str, dtype=None,
                 param_dtype=jnp.float32, use_bias: bool = True) -> nn.Dense:
  """`nn.Dense` initialised like PyTorch's `nn.Linear` default.

  PyTorch draws weight and bias from U(±1/sqrt(in_features))
  (kaiming_uniform with a = sqrt(5)); the official code keeps that default
  for VSE-infinity's MLP, GPO scorer and BERT projection.
  """
  init = symmetric_uniform(1.0 / in_features ** 0.5)
  return nn.Dense(features, use_bias=use_bias, kernel_init=init,
                  bias_init=init, dtype=dtype, param_dtype=param_dtype,
                  name=name)


def batch_extent_mask(mask: jax.Array) -> jax.Array:
  """Rows [B, R] at positions before the batch's last valid region (any row).

  The official collate pads every image's kept regions to the longest image
  of the batch, so BatchNorm's batch statistics see the zero padding of the
  shorter images but not positions past the longest one.

  >>> batch_extent_mask(jnp.array([[True, False, False], [True, True, False]]))
  Array([[ True,  True, False],
         [ True,  True, False]], dtype=bool)
  """
  position = jnp.arange(1, mask.shape[1] + 1)
  extent = jnp.max(jnp.where(mask, position[None, :], 0))
  return jnp.broadcast_to(position[None, :] <= extent, mask.shape)


class RegionMLP(nn.Module):
  r"""Two-layer MLP over region features with BatchNorm (official `MLP(F, E/2, E, 2)`).

  .. math:: \mathrm{MLP}(f) = W_2\,\mathrm{ReLU}(\mathrm{BN}(W_1 f + b_1)) + b_2

  applied to every region [B, R, F] -> [B, R, E], with `hidden` = E // 2.
  BatchNorm normalises over all B·R regions (PyTorch `BatchNorm1d` on the
  flattened [B·R, E/2]); in training (`train=True`, the `batch_stats`
  collection mutable) it uses the batch's biased statistics over the rows of
  `bn_mask` [B, R] and updates the running ones with momentum 0.1 (PyTorch's
  convention; flax's `momentum` = 0.9); in evaluation it uses the running
  ones. eps = 1e-5. The official module also builds a second BatchNorm for
  the output layer that its forward never calls; it is omitted here.

  >>> mlp = RegionMLP(hidden=2, features=3)
  >>> x = jnp.ones((2, 4, 5))
  >>> variables = mlp.init(jax.random.key(0), x)
  >>> sorted(variables)
  ['batch_stats', 'params']
  >>> mlp.apply(variables, x).shape
  (2, 4, 3)
  """
  hidden: int
  features: int
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, bn_mask=None, *, train: bool = False):
    args = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = torch_linear(self.hidden, x.shape[-1], name="fc1", **args)(x)
    mask = None if bn_mask is None else jnp.broadcast_to(
        bn_mask[..., None], h.shape)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     name="bn1", **args)(h, mask=mask)
    return torch_linear(self.features, self.hidden, name="fc2", **args)(
        nn.relu(h))
