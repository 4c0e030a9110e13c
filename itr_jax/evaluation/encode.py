"""Encode every image and caption of a split, in fixed-shape jit-compiled batches."""
from __future__ import annotations

import functools
from typing import Iterable, Mapping

import jax
import numpy as np


@functools.lru_cache(maxsize=8)
def _encoders(model):
  """Compiled encoders for `model`, shared across evaluations (no recompiles)."""
  encode_images = jax.jit(lambda params, images: model.apply(
      {"params": params}, images, method="encode_images"))
  encode_texts = jax.jit(lambda params, tokens, lengths: model.apply(
      {"params": params}, tokens, lengths, method="encode_texts"))
  return encode_images, encode_texts


def _encode(encode_fn, params, batches: Iterable[Mapping[str, np.ndarray]],
            keys) -> np.ndarray:
  chunks = []
  for batch in batches:
    emb = np.asarray(encode_fn(params, *(batch[k] for k in keys)))
    chunks.append(emb[np.asarray(batch["mask"], bool)])
  return np.concatenate(chunks, axis=0)


def encode_split(model, params, image_batches, caption_batches) -> tuple[np.ndarray, np.ndarray]:
  """Embeddings of each image once and of each caption, padding rows dropped.

  `image_batches` yield `images` [B, R, F] and `mask` [B]; `caption_batches`
  yield `tokens` [B, L], `lengths` [B] and `mask` [B] (the last batch of a
  split is padded to the same shape so one compiled program serves all).
  """
  encode_images, encode_texts = _encoders(model)
  image_emb = _encode(encode_images, params, image_batches, ("images",))
  caption_emb = _encode(encode_texts, params, caption_batches, ("tokens", "lengths"))
  return image_emb, caption_emb
