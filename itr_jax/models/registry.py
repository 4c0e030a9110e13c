"""The model registry: `config.model.name` -> builder, in one small dict.

Each builder takes the `config.model` fields it knows (the others belong to
other backbones and are ignored) and returns a Flax module implementing the
scorer interface of `itr_jax.models.scorer`.

>>> import ml_collections
>>> cfg = ml_collections.ConfigDict(dict(name="sgr", vocab_size=10, sim_dim=8))
>>> create_model(cfg).sim_dim
8
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from itr_jax.models import dual_encoder
from itr_jax.models import sgraf
from itr_jax.models import vse
from itr_jax.models import vse_infty


def _create_sgraf(module):
  def build(config: ml_collections.ConfigDict):
    fields = dict(config)
    if fields.pop("text_tower", "gru") != "gru":
      raise ValueError(f"config.model.name={module!r} (SGRAF) only has the official "
                       "BiGRU text tower; set config.model.text_tower='gru'.")
    if not fields.get("vocab_size"):
      raise ValueError("config.model.vocab_size must be set to the vocabulary size.")
    fields["dtype"] = vse.parse_dtype(fields.get("dtype"), "dtype")
    fields["param_dtype"] = vse.parse_dtype(fields.get("param_dtype"), "param_dtype") or jnp.float32
    fields["vocab_size"] = int(fields["vocab_size"])
    return sgraf.SGRAF(module=module, **fields)
  return build


def _create_dual_encoder(family):
  def build(config: ml_collections.ConfigDict):
    return dual_encoder.create_model(ml_collections.ConfigDict({**config, "name": family}))
  return build


# name: (builder, the config.model fields it reads); "clip" / "siglip" are
# models.dual_encoder (ViT + text Transformer, published variants).
MODELS = {
    "vse": (vse.create_model, vse.MODEL_FIELDS),
    "vse_infty": (vse_infty.create_model, vse.MODEL_FIELDS),
    "sgr": (_create_sgraf("sgr"), sgraf.MODEL_FIELDS),
    "saf": (_create_sgraf("saf"), sgraf.MODEL_FIELDS),
    "clip": (_create_dual_encoder("clip"), dual_encoder.MODEL_FIELDS),
    "siglip": (_create_dual_encoder("siglip"), dual_encoder.MODEL_FIELDS),
}


def create_model(config: ml_collections.ConfigDict):
  """The model named by `config.model.name` (default "vse"), built from `config`.

  Fields no registered model reads raise (a typo is never ignored).
  """
  fields = dict(config)
  name = fields.pop("name", "vse")
  if name not in MODELS:
    raise ValueError(f"config.model.name must be one of {sorted(MODELS)}, got {name!r}.")
  known = set().union(*(f for _, f in MODELS.values()))
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"Unknown config.model field(s) {unknown}; known fields are "
                     f"{sorted(known)}.")
  build, own = MODELS[name]
  return build(ml_collections.ConfigDict({k: v for k, v in fields.items() if k in own}))
