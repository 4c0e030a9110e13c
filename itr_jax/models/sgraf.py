r"""SGRAF (Diao et al., AAAI 2021): similarity graph reasoning (SGR) and attention filtration (SAF).

A cross-attention scorer: images are encoded into unit-norm region vectors
plus a self-attention global vector, captions into unit-norm word vectors
plus a global vector, and `similarity` scores every image-caption pair:

* SCAN text-to-image attention (smoothing λ = 9): for word l of a caption,
  a_{lr} = softmax_r(λ · l2norm_l(LeakyReLU_{0.1}(v_r · t_l))), and the
  attended image context c_l = l2norm(Σ_r a_{lr} v_r);
* similarity vectors s_l = l2norm(W_loc (c_l − t_l)²) for each word and
  s_g = l2norm(W_glo (v_glo − t_glo)²) globally, sim_dim 256;
* SGR: 3 graph-reasoning steps over the nodes (s_g, s_1..s_L) with edges
  softmax((W_q s)(W_k s)ᵀ), nodes ReLU(W_g (edge · s)); the global node
  gives the similarity vector. SAF: weights σ(BN(w · s_n)), L1-normalised
  over the nodes; the similarity vector is l2norm(Σ_n weight_n s_n);
* score = sigmoid(w_eval · vector + b).

Faithful to the official PyTorch code (Paranioar/SGRAF, `model.py`): same
layers, initialisation (Xavier-uniform Linear, zero bias, U(±0.1) word
embeddings, PyTorch's GRU default), dropout 0.4 and BatchNorms with
PyTorch's semantics (see `TorchBatchNorm`). The official code slices each
caption to its length; here captions are padded to a fixed length and the
padded words are masked wherever it matters (zero word vectors, text
self-attention, graph edges, SAF weights and SAF BatchNorm statistics), so
scores do not depend on the padding. The visual and text self-attention
(official: inside the similarity network) depend only on the image or the
caption, so they are computed once per item in `encode_images` /
`encode_texts` instead of once per pair; the values are the same.

>>> model = SGRAF(vocab_size=10, word_dim=3, embed_size=8, sim_dim=4)
>>> images, tokens, lengths = jnp.ones((2, 5, 6)), jnp.ones((3, 4), int), jnp.array([4, 2, 1])
>>> variables = model.init(jax.random.key(0), images, tokens, lengths)
>>> img = model.apply(variables, images, method=SGRAF.encode_images)
>>> cap = model.apply(variables, tokens, lengths, method=SGRAF.encode_texts)
>>> scores, aux = model.apply(variables, img, cap, method=SGRAF.similarity)
>>> scores.shape
(2, 3)
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itr_jax.models.gru import GRU
from itr_jax.models.initializers import symmetric_uniform
from itr_jax.models.normalize import l2_normalize
from itr_jax.models.text_encoder import check_caption_batch

Dtype = Any
MODULES = ("sgr", "saf")
# config.model fields an SGRAF model reads (see itr_jax.models.registry).
MODEL_FIELDS = ("vocab_size", "word_dim", "embed_size", "sim_dim", "sgr_steps", "smooth",
                "dropout_rate", "bidirectional", "score_chunk", "text_tower", "dtype",
                "param_dtype")
# PyTorch BatchNorm defaults.
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5


def _dense(features, name, dtype=None, param_dtype=jnp.float32):
  # Official init_weights: Xavier-uniform weight, zero bias, for every Linear.
  return nn.Dense(features, dtype=dtype, param_dtype=param_dtype,
                  kernel_init=nn.initializers.xavier_uniform(),
                  bias_init=nn.initializers.zeros_init(), name=name)


def l1_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-8) -> jax.Array:
  r"""`x / (Σ|x| + eps)` along `axis`, as the official `l1norm`.

  >>> l1_normalize(jnp.array([1.0, 3.0]))
  Array([0.25, 0.75], dtype=float32)
  """
  return x / (jnp.sum(jnp.abs(x), axis=axis, keepdims=True) + eps)


def masked_moments(x: jax.Array, mask: jax.Array, axes) -> tuple:
  """(mean, biased variance, count) of `x` over `axes`, counting where `mask`."""
  mask = jnp.broadcast_to(mask, x.shape).astype(x.dtype)
  count = jnp.sum(mask, axis=axes)
  mean = jnp.sum(x * mask, axis=axes) / count
  centred = x - jnp.expand_dims(mean, axes)
  var = jnp.sum(jnp.square(centred) * mask, axis=axes) / count
  return mean, var, count


def running_update(old, batch_value, momentum=BN_MOMENTUM):
  """PyTorch's running-statistic update `(1 − m)·old + m·batch_value`."""
  return (1.0 - momentum) * old + momentum * batch_value


class TorchBatchNorm(nn.Module):
  r"""BatchNorm with PyTorch's `BatchNorm1d` semantics over `feature_axis`.

  Training (`train=True`): y = γ (x − μ_B)/sqrt(σ²_B + ε) + β with the batch
  mean and *biased* variance over every axis but `feature_axis`; the running
  statistics (collection "batch_stats", `mean` 0 / `var` 1 at init) move by
  momentum 0.1 towards the batch mean and the *unbiased* variance, as
  PyTorch does. Evaluation: the running statistics. ε = 1e-5, γ = 1, β = 0.

  >>> bn = TorchBatchNorm(feature_axis=1)
  >>> x = jnp.arange(6.0).reshape(3, 2)
  >>> v = bn.init(jax.random.key(0), x)
  >>> y, new = bn.apply(v, x, train=True, mutable=["batch_stats"])
  >>> new["batch_stats"]["var"]
  Array([1.3, 1.3], dtype=float32)
  """
  feature_axis: int = -1
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    axis = self.feature_axis % x.ndim
    features = (x.shape[axis],)
    scale = self.param("scale", nn.initializers.ones_init(), features, self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros_init(), features, self.param_dtype)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
    shape = [1] * x.ndim
    shape[axis] = features[0]
    if train:
      axes = tuple(a for a in range(x.ndim) if a != axis)
      mean, var, count = masked_moments(x, jnp.ones((), bool), axes)
      if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
        running_mean.value = running_update(running_mean.value, mean)
        running_var.value = running_update(running_var.value, var * count / (count - 1))
    else:
      mean, var = running_mean.value, running_var.value
    inv = jax.lax.rsqrt(var + BN_EPSILON).reshape(shape)
    return (x - mean.reshape(shape)) * inv * scale.reshape(shape) + bias.reshape(shape)


class SelfAttentionGlobal(nn.Module):
  r"""The official VisualSA / TextSA: a self-attention global vector.

  .. math:: w = \mathrm{softmax}_n\big(W_c\,[\tanh(\mathrm{BN}(W_l x_n)) \odot
            \tanh(\mathrm{BN}(W_g \bar x))]\big), \quad
            g = \mathrm{l2norm}(\textstyle\sum_n w_n x_n)

  `local` [B, N, E], `raw_global` [B, E], `mask` [B, N] (None: all valid).
  `batch_norm=True` (VisualSA) puts a BatchNorm over the N positions (the
  official `BatchNorm1d(num_region)` on [B, N, E]) after W_l and over the E
  features after W_g; TextSA has none. Dropout `dropout_rate` after each tanh.
  """
  dropout_rate: float = 0.4
  batch_norm: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, local, raw_global, mask=None, train: bool = False):
    embed = local.shape[-1]
    dense = lambda features, name: _dense(features, name, self.dtype, self.param_dtype)
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    l_emb = dense(embed, "embedding_local")(local)
    g_emb = dense(embed, "embedding_global")(raw_global)
    if self.batch_norm:
      l_emb = TorchBatchNorm(feature_axis=1, name="bn_local")(l_emb, train)
      g_emb = TorchBatchNorm(feature_axis=-1, name="bn_global")(g_emb, train)
    l_emb = dropout(jnp.tanh(l_emb))
    g_emb = dropout(jnp.tanh(g_emb))
    logits = dense(1, "embedding_common")(l_emb * g_emb[:, None, :])[..., 0]
    if mask is not None:
      logits = jnp.where(mask, logits, -jnp.inf)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=1)
    return l2_normalize(jnp.einsum("bn,bne->be", weights, local.astype(jnp.float32)))


def scan_text_to_image(regions: jax.Array, words: jax.Array, smooth: float) -> jax.Array:
  r"""SCAN t2i attention: the image context of every word, [C, I, L, E].

  .. math:: a_{lr} = \mathrm{softmax}_r\big(\lambda\,
            \mathrm{l2norm}_l(\mathrm{LeakyReLU}_{0.1}(v_r \cdot t_l))\big),
            \quad c_l = \mathrm{l2norm}(\textstyle\sum_r a_{lr} v_r)

  `regions` [I, R, E], `words` [C, L, E]. The l2norm runs over the words of a
  caption, so padded words must be zero vectors (they then add nothing).

  >>> scan_text_to_image(jnp.ones((2, 3, 4)), jnp.ones((5, 6, 4)), 9.0).shape
  (5, 2, 6, 4)
  """
  attn = jnp.einsum("ire,cle->cilr", regions, words)
  attn = jax.nn.leaky_relu(attn, 0.1)
  attn = l2_normalize(attn, axis=2)
  attn = jax.nn.softmax(attn * smooth, axis=-1)
  return l2_normalize(jnp.einsum("cilr,ire->cile", attn, regions))


class GraphReasoning(nn.Module):
  """One SGR step over nodes [..., N, S]; `node_mask` [..., N] masks edges to padding."""
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, nodes, node_mask):
    sim_dim = nodes.shape[-1]
    dense = lambda name: _dense(sim_dim, name, self.dtype, self.param_dtype)
    query, key = dense("graph_query_w")(nodes), dense("graph_key_w")(nodes)
    edges = jnp.einsum("...ns,...ms->...nm", query, key)
    edges = jnp.where(node_mask[..., None, :], edges, -jnp.inf)
    edges = jax.nn.softmax(edges.astype(jnp.float32), axis=-1)
    return nn.relu(dense("sim_graph_w")(jnp.einsum("...nm,...ms->...ns", edges, nodes)))


class AttentionFiltration(nn.Module):
  r"""SAF: y = l2norm(Σ_n w_n s_n), w = L1norm_n(σ(BN(W s_n))), nodes [C, I, N, S].

  The official BatchNorm1d(1) sees, for one caption at a time, the scalar
  logits of all images × that caption's nodes: in training each caption's
  logits are normalised with their own mean and biased variance (padded
  nodes excluded). Returns (vectors [C, I, S], per-caption (mean, unbiased
  variance) [C] each, for the running statistics; see
  `SGRAF.merge_similarity_stats`).
  """
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, nodes, node_mask, train: bool = False):
    logits = _dense(1, "attn_sim_w", self.dtype, self.param_dtype)(nodes)[..., 0]
    logits = logits.astype(jnp.float32)
    scale = self.param("bn_scale", nn.initializers.ones_init(), (1,), self.param_dtype)
    bias = self.param("bn_bias", nn.initializers.zeros_init(), (1,), self.param_dtype)
    running_mean = self.variable("batch_stats", "bn_mean", jnp.zeros, (1,), jnp.float32)
    running_var = self.variable("batch_stats", "bn_var", jnp.ones, (1,), jnp.float32)
    mask = node_mask[:, None, :]  # [C, 1, N]: the same nodes for every image
    if train:
      mean, var, count = masked_moments(logits, mask, (1, 2))
      stats = {"saf_mean": mean, "saf_var": var * count / (count - 1)}
      mean, var = mean[:, None, None], var[:, None, None]
    else:
      stats = {}
      mean, var = running_mean.value, running_var.value
    normed = (logits - mean) * jax.lax.rsqrt(var + BN_EPSILON) * scale + bias
    weights = l1_normalize(jnp.where(mask, jax.nn.sigmoid(normed), 0.0), axis=-1)
    return l2_normalize(jnp.einsum("cin,cins->cis", weights, nodes)), stats


class SGRAF(nn.Module):
  """SGR (`module="sgr"`) or SAF (`module="saf"`) cross-attention scorer.

  Methods (through `model.apply(variables, ..., method=...)`):

  * `encode_images(images [B, R, F], region_mask=None, train=False)` ->
    {"regions": [B, R, E], "global": [B, E]};
  * `encode_texts(tokens [B, L], lengths [B], train=False)` ->
    {"words": [B, L, E] (zero past each length), "mask": [B, L], "global": [B, E]};
  * `similarity(image_repr, caption_repr, train=False)` -> (scores [I, C]
    in (0, 1), aux): aux holds per-caption BatchNorm statistics in training
    (SAF), consumed by `merge_similarity_stats`;
  * `__call__(images, tokens, lengths)` -> scores [B, B] (for `init`).

  Training mode (`train=True`) uses batch statistics in the BatchNorms and
  dropout (rng "dropout"); encode with `mutable=["batch_stats"]` then.
  """
  vocab_size: int
  word_dim: int = 300
  embed_size: int = 1024
  sim_dim: int = 256
  module: str = "sgr"
  sgr_steps: int = 3
  smooth: float = 9.0
  dropout_rate: float = 0.4
  bidirectional: bool = True
  score_chunk: int = 16  # captions scored at once in training (memory bound)
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  two_tower: ClassVar[bool] = False

  def setup(self):
    if self.module not in MODULES:
      raise ValueError(f"module must be one of {MODULES}, got {self.module!r}.")
    if not (isinstance(self.vocab_size, int) and self.vocab_size > 0):
      raise ValueError(f"vocab_size must be a positive int, got {self.vocab_size!r}.")
    if self.sgr_steps < 1:
      raise ValueError(f"sgr_steps must be >= 1, got {self.sgr_steps}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.fc = _dense(self.embed_size, "fc", **kw)
    self.embed = nn.Embed(self.vocab_size, self.word_dim, embedding_init=symmetric_uniform(0.1),
                          **kw)
    self.gru = GRU(self.embed_size, bidirectional=self.bidirectional, **kw)
    self.dropout = nn.Dropout(self.dropout_rate)
    self.v_global_w = SelfAttentionGlobal(self.dropout_rate, batch_norm=True, **kw)
    self.t_global_w = SelfAttentionGlobal(self.dropout_rate, batch_norm=False, **kw)
    self.sim_tranloc_w = _dense(self.sim_dim, "sim_tranloc_w", **kw)
    self.sim_tranglo_w = _dense(self.sim_dim, "sim_tranglo_w", **kw)
    self.sim_eval_w = _dense(1, "sim_eval_w", **kw)
    if self.module == "sgr":
      self.SGR_module = [GraphReasoning(**kw) for _ in range(self.sgr_steps)]
    else:
      self.SAF_module = AttentionFiltration(**kw)

  def encode_images(self, images, region_mask=None, train: bool = False):
    if images.ndim != 3:
      raise ValueError(f"images must be region features [batch, regions, dim], got {images.shape}.")
    if region_mask is not None:
      raise ValueError("SGRAF needs a fixed number of regions per image (no region_mask); "
                       "the official code uses all 36 BUTD regions.")
    regions = l2_normalize(self.fc(images))
    glob = self.v_global_w(regions, jnp.mean(regions, axis=1), train=train)
    return {"regions": regions, "global": glob}

  def encode_texts(self, tokens, lengths, train: bool = False):
    check_caption_batch(tokens, lengths, "int ids")
    words = self.dropout(self.embed(tokens), deterministic=not train)
    outputs, _ = self.gru(words, lengths)
    mask = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    words = jnp.where(mask[..., None], l2_normalize(outputs), 0.0)
    mean = jnp.sum(words, axis=1) / lengths[:, None].astype(words.dtype)
    glob = self.t_global_w(words, mean, mask, train=train)
    return {"words": words, "mask": mask, "global": glob}

  def similarity(self, image_repr, caption_repr, train: bool = False):
    words, word_mask = caption_repr["words"], caption_repr["mask"]
    context = scan_text_to_image(image_repr["regions"], words, self.smooth)
    sim_loc = l2_normalize(self.sim_tranloc_w(jnp.square(context - words[:, None])))
    sim_glo = l2_normalize(self.sim_tranglo_w(jnp.square(
        image_repr["global"][None, :, :] - caption_repr["global"][:, None, :])))
    nodes = jnp.concatenate([sim_glo[:, :, None, :], sim_loc], axis=2)  # [C, I, 1+L, S]
    node_mask = jnp.concatenate([jnp.ones_like(word_mask[:, :1]), word_mask], axis=1)
    aux = {}
    if self.module == "sgr":
      for step in self.SGR_module:
        nodes = step(nodes, node_mask[:, None, :])
      vectors = nodes[:, :, 0, :]
    else:
      vectors, aux = self.SAF_module(nodes, node_mask, train=train)
    scores = jax.nn.sigmoid(self.sim_eval_w(vectors)[..., 0].astype(jnp.float32))
    return scores.T, aux

  def __call__(self, images, tokens, lengths, train: bool = False):
    scores, _ = self.similarity(self.encode_images(images, train=train),
                                self.encode_texts(tokens, lengths, train=train), train=train)
    return scores

  @staticmethod
  def merge_similarity_stats(batch_stats, aux, momentum: float = BN_MOMENTUM):
    """`batch_stats` after the official per-caption SAF BatchNorm updates.

    The official code runs the SAF BatchNorm once per caption, in caption
    order, each call moving the running statistics by momentum m:
    after C captions `new = (1 − m)^C old + Σ_k m (1 − m)^(C−1−k) stat_k`.
    `aux` holds `saf_mean` / `saf_var` [C] in caption order. No-op for SGR.
    """
    if "saf_mean" not in aux:
      return batch_stats
    num = aux["saf_mean"].shape[0]
    decay = (1.0 - momentum) ** jnp.arange(num - 1, -1, -1, dtype=jnp.float32)
    saf = dict(batch_stats["SAF_module"])
    for name, stat in (("bn_mean", aux["saf_mean"]), ("bn_var", aux["saf_var"])):
      saf[name] = ((1.0 - momentum) ** num * saf[name] +
                   momentum * jnp.sum(decay * jax.lax.stop_gradient(stat)))
    return {**batch_stats, "SAF_module": saf}
