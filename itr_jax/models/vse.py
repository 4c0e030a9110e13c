"""The two-tower visual-semantic embedding model (VSE++ / VSE-infinity)."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from itr_jax.models import bert_text_encoder
from itr_jax.models.image_encoder import ImageEncoder
from itr_jax.models.pooling import POOLINGS
from itr_jax.models.text_encoder import TextEncoder

Dtype = Any


class VSEModel(nn.Module):
  """Image and text encoders into one joint space of unit-norm embeddings.

  Scores are dot products `image_emb @ caption_emb.T` (cosine similarities).
  Methods, all usable as `model.apply(variables, ..., method=...)`:

  * `encode_images(images [B, R, F], region_mask [B, R] | None, train=False) -> [B, E]`
  * `encode_texts(tokens int32 [B, L], lengths int32 [B], train=False) -> [B, E]`
  * `__call__(images, tokens, lengths, region_mask=None, train=False) -> (img_emb, cap_emb)`

  Parameters live under `image_encoder` and `text_encoder` (the names a
  per-module learning-rate multiplier refers to). Embeddings are float32 even
  when `dtype` (the computation dtype) is e.g. bfloat16.

  `text_tower` picks the text encoder: "gru" (word embeddings + GRU, token
  ids from a word `Vocabulary`) or "bert" (`BertTextEncoder`: a pretrained
  BERT of config `bert_config` + projection, WordPiece ids; `vocab_size`,
  `word_dim` and `bidirectional` are then unused).

  >>> model = VSEModel(vocab_size=10, word_dim=3, embed_size=4)
  >>> images = jnp.ones((2, 5, 6))
  >>> tokens = jnp.array([[1, 2, 0], [3, 0, 0]])
  >>> lengths = jnp.array([2, 1])
  >>> variables = model.init(jax.random.key(0), images, tokens, lengths)
  >>> img_emb, cap_emb = model.apply(variables, images, tokens, lengths)
  >>> (img_emb @ cap_emb.T).shape
  (2, 2)
  >>> model.apply(variables, images, method=VSEModel.encode_images).shape
  (2, 4)
  """
  vocab_size: int
  word_dim: int = 300
  embed_size: int = 1024
  pooling: str = "max"
  bidirectional: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  text_tower: str = "gru"
  bert_config: Any = None  # an itr_jax.text_encoders.BertConfig

  def setup(self):
    if not (isinstance(self.vocab_size, int) and self.vocab_size > 0):
      raise ValueError("vocab_size must be a positive int (the vocabulary "
                       f"length, filled in from the data), got "
                       f"{self.vocab_size!r}.")
    self.image_encoder = ImageEncoder(
        embed_size=self.embed_size, pooling=self.pooling, dtype=self.dtype,
        param_dtype=self.param_dtype)
    if self.text_tower not in TEXT_TOWERS:
      raise ValueError(f"text_tower must be one of {TEXT_TOWERS}, got "
                       f"{self.text_tower!r}.")
    if self.text_tower == "bert":
      if self.bert_config is None:
        raise ValueError("text_tower='bert' needs bert_config (create_model "
                         "reads it from config.model.bert_path).")
      self.text_encoder = bert_text_encoder.BertTextEncoder(
          self.bert_config, embed_size=self.embed_size, dtype=self.dtype,
          param_dtype=self.param_dtype)
      return
    self.text_encoder = TextEncoder(
        vocab_size=self.vocab_size, word_dim=self.word_dim,
        embed_size=self.embed_size, bidirectional=self.bidirectional,
        dtype=self.dtype, param_dtype=self.param_dtype)

  # `train` is part of the model interface (`scorer`); this model has no
  # dropout or batch statistics, so it computes the same either way.
  def encode_images(self, images: jax.Array, region_mask: Optional[jax.Array] = None,
                    train: bool = False) -> jax.Array:
    del train
    return self.image_encoder(images, region_mask)

  def encode_texts(self, tokens: jax.Array, lengths: jax.Array,
                   train: bool = False) -> jax.Array:
    del train
    return self.text_encoder(tokens, lengths)

  def __call__(self, images, tokens, lengths, region_mask=None, train: bool = False):
    return (self.encode_images(images, region_mask, train=train),
            self.encode_texts(tokens, lengths, train=train))


TEXT_TOWERS = ("gru", "bert")
MODEL_FIELDS = ("vocab_size", "word_dim", "embed_size", "pooling",
                "bidirectional", "dtype", "param_dtype", "text_tower",
                "bert_path")


def parse_dtype(name, field):
  """The jnp dtype `config.model.<field>` names, or None for ''/None."""
  if name is None or name == "":
    return None
  try:
    return jnp.dtype(name)
  except TypeError:
    raise ValueError(f"config.model.{field} must name a dtype such as "
                     f"'float32' or 'bfloat16', got {name!r}.") from None


def model_fields(config: ml_collections.ConfigDict) -> dict:
  """Validated constructor arguments from the `config.model` subtree.

  Fields (all optional except `vocab_size`, which the training script fills
  in from the vocabulary): name ("vse" | "vse_infty", see
  `itr_jax.models.MODELS`; dropped here), vocab_size, word_dim (300),
  embed_size (1024), pooling ("max" | "gpo"), bidirectional (False), dtype
  (None: float32; "bfloat16" computes in bf16), param_dtype ("float32"),
  text_tower ("gru" | "bert"), bert_path (a local BERT / sentence-transformers
  directory for the "bert" tower; '' is the packaged all-MiniLM-L6-v2). With
  "bert", vocab_size is the WordPiece vocabulary's size and `bert_config` is
  returned in place of `bert_path`. Unknown fields raise, so a typo cannot be
  silently ignored.
  """
  fields = dict(config)
  fields.pop("name", None)
  unknown = sorted(set(fields) - set(MODEL_FIELDS))
  if unknown:
    raise ValueError(f"Unknown config.model field(s) {unknown}; known fields "
                     f"are {['name', *MODEL_FIELDS]}.")
  if not fields.get("vocab_size"):
    raise ValueError("config.model.vocab_size must be set to the vocabulary "
                     "size (e.g. config.model.vocab_size = len(vocab)).")
  if fields.get("pooling", "max") not in POOLINGS:
    raise ValueError(f"config.model.pooling must be one of {POOLINGS}, got "
                     f"{fields['pooling']!r}.")
  fields["dtype"] = parse_dtype(fields.get("dtype"), "dtype")
  fields["param_dtype"] = parse_dtype(fields.get("param_dtype"),
                                 "param_dtype") or jnp.float32
  fields["vocab_size"] = int(fields["vocab_size"])
  bert_path = fields.pop("bert_path", "") or None
  if fields.get("text_tower", "gru") == "bert":
    fields["bert_config"] = bert_text_encoder.bert_config(bert_path)
    if fields["vocab_size"] > fields["bert_config"].vocab_size:
      raise ValueError(
          f"config.model.vocab_size={fields['vocab_size']} exceeds the BERT "
          f"vocabulary ({fields['bert_config'].vocab_size}); with "
          "text_tower='bert' token ids must come from that model's WordPiece "
          "tokenizer (set vocab_size to 0).")
  return fields


def create_model(config: ml_collections.ConfigDict) -> VSEModel:
  """Builds a `VSEModel` (VSE++) from the `config.model` subtree (`model_fields`).

  >>> cfg = ml_collections.ConfigDict(dict(vocab_size=100, pooling="gpo"))
  >>> create_model(cfg).pooling
  'gpo'
  """
  return VSEModel(**model_fields(config))
