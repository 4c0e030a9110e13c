r"""VSE-infinity (Chen et al., CVPR 2021; woodfrog/vse_infty) on region features.

Image tower (the official precomputed "basic" `EncoderImageAggr`):

.. math:: v = \mathrm{l2norm}\big(\mathrm{GPO}_r(W f_r + b + \mathrm{MLP}(f_r))\big)

with `W` Xavier-uniform, `b` = 0 and `RegionMLP` (Linear F→E/2, BatchNorm,
ReLU, Linear E/2→E). Text tower, "gru" (the official `bigru` branch):

.. math:: t = \mathrm{l2norm}\big(\mathrm{GPO}_j(\tfrac12(\overrightarrow{h}_j
          + \overleftarrow{h}_j))\big), \quad h = \mathrm{BiGRU}(\mathrm{embed}(w))

or "bert" (the official `master` branch): `l2norm(GPO_j(Linear(BERT(w)_j)))`.
Both GPOs are `GPO(pe_dim=32, hidden=32)`. Scores are `v @ t.T`.

>>> import jax, jax.numpy as jnp
>>> model = VSEInftyModel(vocab_size=10, word_dim=3, embed_size=4)
>>> images, tokens, lengths = jnp.ones((2, 5, 6)), jnp.ones((2, 3), int), jnp.array([3, 1])
>>> variables = model.init(jax.random.key(0), images, tokens, lengths)
>>> sorted(variables)
['batch_stats', 'params']
>>> [e.shape for e in model.apply(variables, images, tokens, lengths)]
[(2, 4), (2, 4)]
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from itr_jax.models.gru import GRU
from itr_jax.models.initializers import symmetric_uniform
from itr_jax.models.normalize import l2_normalize
from itr_jax.models.pooling import GPO, _check_mask
from itr_jax.models.region_mlp import RegionMLP, batch_extent_mask, torch_linear
from itr_jax.models.text_encoder import check_caption_batch

Dtype = Any


def length_mask(lengths: jax.Array, length: int) -> jax.Array:
  """[B, length] True at positions < lengths[b]."""
  return jnp.arange(length)[None, :] < lengths[:, None]


class VSEInftyImageEncoder(nn.Module):
  """Region features [B, R, F] (+ mask [B, R]) -> unit-norm embeddings [B, E].

  `train` selects BatchNorm's batch statistics (and their update) over the
  running ones. Padded regions (mask False) are excluded from GPO; BatchNorm's
  statistics cover positions up to the batch's last valid region, as the
  official padding (see `batch_extent_mask`).
  """
  embed_size: int = 1024
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, region_mask=None, *, train: bool = False):
    mask = _check_mask(images, region_mask)
    args = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    features = nn.Dense(self.embed_size, kernel_init=nn.initializers.xavier_uniform(),
                        bias_init=nn.initializers.zeros_init(), name="fc",
                        **args)(images)
    features = features + RegionMLP(self.embed_size // 2, self.embed_size,
                                    name="mlp", **args)(
                                        images, batch_extent_mask(mask), train=train)
    pooled, _ = GPO(name="gpo", **args)(features, mask)
    return l2_normalize(pooled)


class VSEInftyGRUTextEncoder(nn.Module):
  """Word ids [B, L] + lengths [B] -> unit-norm embeddings [B, E] (BiGRU + GPO).

  Word embeddings U(-0.1, 0.1); GRU PyTorch-default U(±1/sqrt(E)); the two
  directions' per-word states are averaged (`bidirectional=False` keeps only
  the forward one, not an official option).
  """
  vocab_size: int
  word_dim: int = 300
  embed_size: int = 1024
  bidirectional: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, lengths):
    check_caption_batch(tokens, lengths, "int ids")
    args = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    words = nn.Embed(self.vocab_size, self.word_dim,
                     embedding_init=symmetric_uniform(0.1), name="embed",
                     **args)(tokens)
    states, _ = GRU(self.embed_size, bidirectional=self.bidirectional,
                    name="gru", **args)(words, lengths)
    pooled, _ = GPO(name="gpo", **args)(states, length_mask(lengths, tokens.shape[1]))
    return l2_normalize(pooled)


class _BertTokens(nn.Module):
  """A `BertEncoder` under the name `bert` (so `with_pretrained_bert` fits)."""
  config: Any
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, tokens, mask):
    from itr_jax.text_encoders.bert import BertEncoder  # pylint: disable=g-import-not-at-top
    return BertEncoder(self.config, self.dtype, name="bert")(tokens, mask)


class VSEInftyBertTextEncoder(nn.Module):
  """WordPiece ids [B, L] + lengths [B] -> unit-norm embeddings [B, E].

  BERT token states -> Linear(hidden -> E) (PyTorch default init) -> GPO over
  the `lengths` tokens ([CLS] ... [SEP]). BERT params sit at
  `sentence_bert/bert` (fine-tune at 0.1x: lr_multipliers {"sentence_bert": 0.1}).
  """
  bert_config: Any
  embed_size: int = 1024
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, lengths):
    check_caption_batch(tokens, lengths, "WordPiece ids")
    mask = length_mask(lengths, tokens.shape[1])
    states = _BertTokens(self.bert_config, self.dtype, name="sentence_bert")(
        tokens, mask.astype(jnp.int32))
    return project_and_pool(states, mask, self.embed_size, dtype=self.dtype,
                            param_dtype=self.param_dtype)


def project_and_pool(states, mask, embed_size, *, dtype=None,
                     param_dtype=jnp.float32):
  """`l2norm(GPO(Linear(states), mask))`: the BERT tower's head.

  Call inside an `nn.compact` method: creates the caller's `linear` and `gpo`
  submodules.
  """
  projected = torch_linear(embed_size, states.shape[-1], name="linear",
                           dtype=dtype, param_dtype=param_dtype)(states)
  pooled, _ = GPO(name="gpo", dtype=dtype, param_dtype=param_dtype)(
      projected, mask)
  return l2_normalize(pooled)


class VSEInftyModel(nn.Module):
  """The VSE-infinity two-tower model; same interface as `VSEModel`.

  * `encode_images(images [B, R, F], region_mask [B, R] | None, train=False) -> [B, E]`
  * `encode_texts(tokens [B, L], lengths [B], train=False) -> [B, E]`
  * `__call__(images, tokens, lengths, region_mask=None, train=False)`

  Variables: `params` (`image_encoder`, `text_encoder`) and `batch_stats`
  (the region MLP's BatchNorm): apply with `mutable=["batch_stats"]` and
  `train=True` in training.
  """
  vocab_size: int
  word_dim: int = 300
  embed_size: int = 1024
  bidirectional: bool = True
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  text_tower: str = "gru"
  bert_config: Any = None

  def setup(self):
    args = dict(embed_size=self.embed_size, dtype=self.dtype,
                param_dtype=self.param_dtype)
    self.image_encoder = VSEInftyImageEncoder(**args)
    if self.text_tower == "bert":
      if self.bert_config is None:
        raise ValueError("text_tower='bert' needs bert_config (create_model "
                         "reads it from config.model.bert_path).")
      self.text_encoder = VSEInftyBertTextEncoder(self.bert_config, **args)
    elif self.text_tower == "gru":
      self.text_encoder = VSEInftyGRUTextEncoder(
          self.vocab_size, word_dim=self.word_dim,
          bidirectional=self.bidirectional, **args)
    else:
      raise ValueError(f"text_tower must be 'gru' or 'bert', got "
                       f"{self.text_tower!r}.")

  def encode_images(self, images, region_mask=None, train: bool = False):
    return self.image_encoder(images, region_mask, train=train)

  def encode_texts(self, tokens, lengths, train: bool = False):
    del train  # no dropout or batch statistics in the text towers
    return self.text_encoder(tokens, lengths)

  def __call__(self, images, tokens, lengths, region_mask=None, train=False):
    return (self.encode_images(images, region_mask, train=train),
            self.encode_texts(tokens, lengths, train=train))


def create_model(config: ml_collections.ConfigDict) -> VSEInftyModel:
  """A `VSEInftyModel` from `config.model` (the fields of `vse.create_model`).

  `pooling` must be "gpo" (VSE-infinity pools both towers with GPO).

  >>> cfg = ml_collections.ConfigDict(dict(vocab_size=100, pooling="gpo",
  ...                                      bidirectional=True))
  >>> create_model(cfg).bidirectional
  True
  """
  from itr_jax.models import vse  # pylint: disable=g-import-not-at-top
  if config.get("pooling", "gpo") != "gpo":
    raise ValueError("config.model.name='vse_infty' pools with GPO: set "
                     f"config.model.pooling='gpo' (got {config.pooling!r}).")
  fields = vse.model_fields(config)
  fields.pop("pooling", None)
  return VSEInftyModel(**fields)
