"""A published CLIP / SigLIP tokenizer behind the pipeline's `Tokenizer` API.

The caption pipeline asks for ``encode_batch(texts, max_len)`` with the
data's ``max_len`` (and once with ``max_len + 1``, to count truncated
captions); `clip_tokenizers` tokenizes to a fixed context length. This
loads the checkpoint's tokenizer once per length asked for: ids are
``<start> pieces <end>`` (CLIP) or ``pieces </s>`` (SigLIP), padded, with the
end token kept when a caption is cut, as the reference tokenizers do.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from itr_jax.text_encoders import clip_tokenizers


class TowerTokenizer:
  """`clip_tokenizers.load_tokenizer(path, family, ...)` as a `Tokenizer`."""

  def __init__(self, path: str, family: str):
    self.path, self.family = path, family
    self.vocab_size = self._at(8).vocab_size  # loads (and checks) the files now

  @functools.lru_cache(maxsize=4)
  def _at(self, max_len: int):
    return clip_tokenizers.load_tokenizer(self.path, self.family, max_len)

  def __len__(self) -> int:
    return self.vocab_size

  def encode_batch(self, texts: Sequence[str],
                   max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(``int32[N, max_len]`` ids, ``int32[N]`` lengths)."""
    return self._at(int(max_len))(list(texts))
