r"""Pre-LayerNorm Transformer blocks shared by the ViT and text towers.

One block (CLIP, SigLIP, ViT):

.. math:: x \leftarrow x + \mathrm{MHA}(\mathrm{LN}_1(x)), \qquad
          x \leftarrow x + W_2\, \phi(W_1\, \mathrm{LN}_2(x))

with :math:`\phi` one of `ACTIVATIONS`. Attention runs through
`jax.nn.dot_product_attention` (fused kernels where the backend has them;
a causal mask is a flag, not a [L, L] array). Parameters follow the flax /
big_vision layout: ``attn/{query,key,value}/kernel`` [D, H, D/H],
``attn/out/kernel`` [H, D/H, D], ``mlp/fc1``, ``mlp/fc2``, ``ln_1``, ``ln_2``.

>>> import jax, jax.numpy as jnp
>>> enc = Encoder(layers=2, heads=2, mlp_dim=16, act="quick_gelu")
>>> x = jnp.ones((1, 3, 8))
>>> params = enc.init(jax.random.key(0), x)["params"]
>>> sorted(params), enc.apply({"params": params}, x).shape
(['block_0', 'block_1'], (1, 3, 8))
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def quick_gelu(x):
  r"""OpenAI CLIP's :math:`x\,\sigma(1.702 x)`."""
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,                             # OpenAI CLIP
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # open_clip (LAION) CLIP
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # SigLIP
}


class Attention(nn.Module):
  """Multi-head attention of queries `x` [B, Lq, D] over `kv` [B, Lk, D]."""
  heads: int
  causal: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, kv=None):
    kv = x if kv is None else kv
    width = x.shape[-1]
    if width % self.heads:
      raise ValueError(f"width {width} is not divisible by heads {self.heads}.")
    dense = lambda name: nn.DenseGeneral(
        (self.heads, width // self.heads), dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    q, k, v = dense("query")(x), dense("key")(kv), dense("value")(kv)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype,
                           param_dtype=self.param_dtype, name="out")(out)


class Mlp(nn.Module):
  mlp_dim: int
  act: str
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype,
                                     name=name)
    return dense(x.shape[-1], "fc2")(ACTIVATIONS[self.act](dense(self.mlp_dim, "fc1")(x)))


class Block(nn.Module):
  """One pre-LN residual block."""
  heads: int
  mlp_dim: int
  act: str
  causal: bool = False
  ln_eps: float = 1e-5
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    norm = lambda name: nn.LayerNorm(self.ln_eps, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name=name)
    x = x + Attention(self.heads, self.causal, self.dtype, self.param_dtype,
                      name="attn")(norm("ln_1")(x))
    return x + Mlp(self.mlp_dim, self.act, self.dtype, self.param_dtype,
                   name="mlp")(norm("ln_2")(x))


class Encoder(nn.Module):
  """`layers` blocks; with `remat` each block's activations are recomputed
  in the backward pass (memory of one block instead of all)."""
  layers: int
  heads: int
  mlp_dim: int
  act: str
  causal: bool = False
  ln_eps: float = 1e-5
  remat: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.act not in ACTIVATIONS:
      raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {self.act!r}.")
    block = nn.remat(Block) if self.remat else Block
    for i in range(self.layers):
      x = block(self.heads, self.mlp_dim, self.act, self.causal, self.ln_eps,
                self.dtype, self.param_dtype, name=f"block_{i}")(x)
    return x
