"""BERT encoder in Flax (post-LN, absolute positions), as Hugging Face's BertModel.

The parameter tree is laid out so that a PyTorch ``BertModel`` state dict maps
onto it one tensor at a time (see `bert_weights.bert_params_from_state_dict`):

    embeddings/{word,position,token_type}_embeddings/embedding, embeddings/layer_norm
    layer_{i}/attention/{query,key,value,output}, layer_{i}/attention_layer_norm,
    layer_{i}/intermediate, layer_{i}/output, layer_{i}/output_layer_norm

`SentenceBert` adds sentence-transformers' mean pooling and L2 normalisation,
so it can serve both as the caption embedder for RSC relevance and as a
pretrained text tower for the ITR model.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itr_jax import filesystem as fs
from itr_jax.models.normalize import l2_normalize
from itr_jax.text_encoders.mean_pool import mean_pool

Dtype = Any

# Hugging Face activation names -> functions. "gelu" is the exact (erf) GELU;
# the tanh approximation has its own names there.
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


# Upper bounds of a config's sizes, far above published BERT-family models
# (BERT-large: 1024 hidden, 24 layers, 4096 intermediate, 512 positions).
_SIZE_LIMITS = {"vocab_size": 1 << 20, "hidden_size": 16384, "num_hidden_layers": 256,
                "num_attention_heads": 1024, "intermediate_size": 65536,
                "max_position_embeddings": 65536, "type_vocab_size": 1024}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Sizes of a BERT encoder, read from a Hugging Face ``config.json``.

  >>> c = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1,
  ...                num_attention_heads=2, intermediate_size=16)
  >>> c.head_dim
  4
  """
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  pad_token_id: int = 0

  def __post_init__(self):
    for field, most in _SIZE_LIMITS.items():
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ValueError(f"BertConfig.{field} must be an integer in [1, {most}], got "
                         f"{value!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"BertConfig.hidden_size={self.hidden_size} must be divisible by "
          f"num_attention_heads={self.num_attention_heads}")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"BertConfig.hidden_act={self.hidden_act!r} is not "
                       f"supported; use one of {sorted(_ACTIVATIONS)}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_dict(cls, d: dict) -> "BertConfig":
    """Builds the config from a parsed ``config.json``; refuses non-BERT models."""
    model_type = d.get("model_type", "bert")
    if model_type != "bert":
      raise ValueError(f"config model_type={model_type!r}: only BERT-family "
                       "encoders (model_type 'bert') are supported")
    position_type = d.get("position_embedding_type", "absolute")
    if position_type != "absolute":
      raise ValueError(f"config position_embedding_type={position_type!r}: "
                       "only 'absolute' position embeddings are supported")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})

  @classmethod
  def from_json_file(cls, path: str) -> "BertConfig":
    if not os.path.isfile(path):
      raise ValueError(f"missing BERT config file {path!r}: a model directory "
                       "needs the Hugging Face config.json")
    return cls.from_dict(fs.read_json_object(path, 16 << 20, what="BERT config file"))


def _layer_norm(config: BertConfig, dtype, name: str) -> nn.LayerNorm:
  # Exact two-pass variance: the E[x^2] - E[x]^2 shortcut costs ~1e-6 here.
  return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype,
                      use_fast_variance=False, name=name)


class BertEmbeddings(nn.Module):
  """word + absolute position + token type embeddings, then LayerNorm, dropout."""
  config: BertConfig
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, token_ids, token_type_ids, *, deterministic: bool):
    c = self.config
    length = token_ids.shape[-1]
    if length > c.max_position_embeddings:
      raise ValueError(f"sequence length {length} exceeds the model's "
                       f"max_position_embeddings={c.max_position_embeddings}")
    embed = lambda n, name: nn.Embed(n, c.hidden_size, dtype=self.dtype,
                                     name=name)
    x = embed(c.vocab_size, "word_embeddings")(token_ids)
    x = x + embed(c.max_position_embeddings, "position_embeddings")(
        jnp.arange(length))
    x = x + embed(c.type_vocab_size, "token_type_embeddings")(token_type_ids)
    x = _layer_norm(c, self.dtype, "layer_norm")(x)
    return nn.Dropout(c.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
  r"""Multi-head self-attention with its output projection (no residual).

  .. math:: \mathrm{softmax}(Q K^\top / \sqrt{d_h} + M) V, \quad
            M_{bj} = 0 \text{ if key } j \text{ is real else } -\infty
  """
  config: BertConfig
  dtype: Optional[Dtype] = None
  precision: Any = None

  @nn.compact
  def __call__(self, x, attention_mask, *, deterministic: bool):
    c = self.config
    dense = lambda name: nn.Dense(c.hidden_size, dtype=self.dtype,
                                  precision=self.precision, name=name)
    split = lambda t: t.reshape(t.shape[:-1] + (c.num_attention_heads,
                                                c.head_dim))
    q, k, v = (split(dense(n)(x)) for n in ("query", "key", "value"))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=self.precision)
    scores = scores.astype(jnp.float32) / jnp.sqrt(jnp.float32(c.head_dim))
    keep = attention_mask[:, None, None, :].astype(bool)
    # finfo.min rather than -inf: a row with no real key stays finite.
    scores = jnp.where(keep, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    probs = nn.Dropout(c.attention_probs_dropout_prob)(
        probs, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=self.precision)
    out = out.reshape(out.shape[:-2] + (c.hidden_size,))
    return dense("output")(out)


class BertLayer(nn.Module):
  """One post-LN transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
  config: BertConfig
  dtype: Optional[Dtype] = None
  precision: Any = None

  @nn.compact
  def __call__(self, x, attention_mask, *, deterministic: bool):
    c = self.config
    dropout = lambda t: nn.Dropout(c.hidden_dropout_prob)(
        t, deterministic=deterministic)
    h = BertSelfAttention(c, self.dtype, self.precision, name="attention")(
        x, attention_mask, deterministic=deterministic)
    x = _layer_norm(c, self.dtype, "attention_layer_norm")(x + dropout(h))
    h = nn.Dense(c.intermediate_size, dtype=self.dtype,
                 precision=self.precision, name="intermediate")(x)
    h = nn.Dense(c.hidden_size, dtype=self.dtype, precision=self.precision,
                 name="output")(_ACTIVATIONS[c.hidden_act](h))
    return _layer_norm(c, self.dtype, "output_layer_norm")(x + dropout(h))


class BertEncoder(nn.Module):
  """BERT token encoder: ``(token_ids, attention_mask) -> [B, L, hidden]``.

  Args (call):
    token_ids: int ``[B, L]`` WordPiece ids, ``[CLS] ... [SEP]`` then padding.
    attention_mask: ``[B, L]``, 1/True for real tokens, 0/False for padding.
    token_type_ids: optional int ``[B, L]`` segment ids (default all 0).
    deterministic: False applies dropout (needs a 'dropout' rng).

  `precision` is passed to every matmul; "highest" keeps float32 accuracy on
  GPUs/TPUs (whose default is TF32/bf16 passes); it changes nothing on CPU.

  >>> c = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=2,
  ...                num_attention_heads=2, intermediate_size=16)
  >>> ids, mask = jnp.array([[2, 5, 3, 0]]), jnp.array([[1, 1, 1, 0]])
  >>> model = BertEncoder(c)
  >>> params = model.init(jax.random.key(0), ids, mask)
  >>> model.apply(params, ids, mask).shape
  (1, 4, 8)
  """
  config: BertConfig
  dtype: Optional[Dtype] = None
  precision: Any = None

  @nn.compact
  def __call__(self, token_ids, attention_mask, token_type_ids=None, *,
               deterministic: bool = True):
    if token_ids.ndim != 2 or attention_mask.shape != token_ids.shape:
      raise ValueError(
          f"token_ids must be [B, L] and attention_mask the same shape; got "
          f"{token_ids.shape} and {attention_mask.shape}")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(token_ids)
    x = BertEmbeddings(self.config, self.dtype, name="embeddings")(
        token_ids, token_type_ids, deterministic=deterministic)
    for i in range(self.config.num_hidden_layers):
      x = BertLayer(self.config, self.dtype, self.precision, name=f"layer_{i}")(
          x, attention_mask, deterministic=deterministic)
    return x


class SentenceBert(nn.Module):
  r"""BERT + mean pooling (+ L2 normalisation): sentence-transformers' pipeline.

  .. math:: e = \frac{\sum_t m_t h_t}{\max(\sum_t m_t, 10^{-9})}, \qquad
            \hat e = e / \lVert e \rVert_2

  ``__call__(token_ids [B, L], attention_mask [B, L]) -> [B, hidden]`` float32.
  Parameters live under ``params['bert']`` (a `BertEncoder` tree), so
  pretrained weights drop in with
  ``{'params': {'bert': load_bert_params(path, config)}}``. As a text tower,
  set ``normalize=False`` when a projection follows.

  >>> c = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
  ...                num_attention_heads=2, intermediate_size=16)
  >>> ids, mask = jnp.array([[2, 5, 3, 0]]), jnp.array([[1, 1, 1, 0]])
  >>> model = SentenceBert(c)
  >>> v = model.init(jax.random.key(0), ids, mask)
  >>> e = model.apply(v, ids, mask)
  >>> e.shape, bool(jnp.allclose(jnp.linalg.norm(e), 1.0))
  ((1, 8), True)
  """
  config: BertConfig
  normalize: bool = True
  dtype: Optional[Dtype] = None
  precision: Any = None

  @nn.compact
  def __call__(self, token_ids, attention_mask, token_type_ids=None, *,
               deterministic: bool = True):
    hidden = BertEncoder(self.config, self.dtype, self.precision, name="bert")(
        token_ids, attention_mask, token_type_ids, deterministic=deterministic)
    pooled = mean_pool(hidden, attention_mask)
    return l2_normalize(pooled) if self.normalize else pooled
