"""Text encoder: word embeddings -> (bi)GRU -> final state, length-masked."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itr_jax.models.gru import GRU
from itr_jax.models.initializers import symmetric_uniform
from itr_jax.models.normalize import l2_normalize

Dtype = Any


def check_caption_batch(tokens: jax.Array, lengths: jax.Array, what: str) -> None:
  """Raises ValueError unless tokens are [B, L] `what` and lengths [B]."""
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [batch, length] {what}, got shape "
                     f"{tokens.shape}.")
  if lengths.shape != tokens.shape[:1]:
    raise ValueError(f"lengths must have shape {tokens.shape[:1]} (one per "
                     f"caption), got {lengths.shape}.")


class TextEncoder(nn.Module):
  r"""Token ids [B, L] + lengths [B] -> unit-norm caption embeddings [B, E].

  .. math:: t = \mathrm{l2norm}(h_{\ell}), \quad
            h = \mathrm{GRU}(\mathrm{embed}(w_1), \dots, \mathrm{embed}(w_\ell))

  where ℓ is the caption's true length: tokens at positions >= ℓ never affect
  the output, so batches can be padded to a fixed L. With `bidirectional`,
  the final states of a forward and a backward GRU (each reading only the
  valid prefix) are averaged. Word embeddings are U(-0.1, 0.1) as the official
  code; the GRU uses PyTorch's default U(±1/sqrt(E)). Lengths must satisfy
  1 <= lengths <= L (not checked under jit).

  >>> enc = TextEncoder(vocab_size=10, word_dim=3, embed_size=4)
  >>> tokens = jnp.array([[1, 2, 3, 0], [4, 5, 0, 0]])
  >>> lengths = jnp.array([3, 2])
  >>> params = enc.init(jax.random.key(0), tokens, lengths)
  >>> enc.apply(params, tokens, lengths).shape
  (2, 4)
  """
  vocab_size: int
  word_dim: int = 300
  embed_size: int = 1024
  bidirectional: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    check_caption_batch(tokens, lengths, "int ids")
    words = nn.Embed(
        self.vocab_size, self.word_dim, dtype=self.dtype,
        param_dtype=self.param_dtype, embedding_init=symmetric_uniform(0.1),
        name="embed")(tokens)
    _, final = GRU(self.embed_size, bidirectional=self.bidirectional,
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   name="gru")(words, lengths)
    return l2_normalize(final)
