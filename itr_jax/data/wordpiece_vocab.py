"""BERT WordPiece token ids behind the `Vocabulary.encode_batch` interface.

The input pipeline tokenises captions with ``vocab.encode_batch(texts,
max_len)``; for a BERT text tower (``config.model.text_tower = "bert"``) this
adapter stands in for the word `Vocabulary`: ids are the model directory's
WordPiece ids, ``[CLS] pieces [SEP]``, zero-padded to ``max_len`` (BERT's
``[PAD]`` is 0, and the tower masks padding by length anyway). A caption
longer than ``max_len`` keeps its first ``max_len - 2`` pieces, then
``[SEP]``, as the tokenizer truncates. ``len()`` is the WordPiece vocabulary
size (the model's ``vocab_size``).

>>> v = WordPieceVocabulary()  # the packaged all-MiniLM-L6-v2 tokenizer
>>> ids, lengths = v.encode_batch(["A red dog.", "a cat"], max_len=6)
>>> ids.tolist(), lengths.tolist(), len(v)
([[101, 1037, 2417, 3899, 1012, 102], [101, 1037, 4937, 102, 0, 0]], [6, 4], 30522)
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


class WordPieceVocabulary:
  """WordPiece tokenizer of a local BERT / sentence-transformers directory.

  Args:
    model_dir: the directory (``tokenizer.json`` or ``vocab.txt``); None is
      the packaged all-MiniLM-L6-v2.
  """

  pad_id = 0

  def __init__(self, model_dir: Optional[str] = None):
    # Imported here: itr_jax.models and text_encoders pull in JAX and Flax.
    from itr_jax.models.bert_text_encoder import bert_model_dir  # pylint: disable=g-import-not-at-top
    from itr_jax.text_encoders.wordpiece import WordPiece  # pylint: disable=g-import-not-at-top
    self.model_dir = bert_model_dir(model_dir)
    self._wordpiece = WordPiece
    self._by_max_len = {}  # max_len -> WordPiece truncating to it
    self.vocab_size = int(self._tokenizer(3).settings["vocab_size"])

  def _tokenizer(self, max_len: int):
    if max_len not in self._by_max_len:
      self._by_max_len[max_len] = self._wordpiece(self.model_dir,
                                                  max_seq_length=max_len)
    return self._by_max_len[max_len]

  def __len__(self) -> int:
    return self.vocab_size

  def mask_and_continuation(self) -> tuple[int, np.ndarray]:
    """([MASK]'s id, bool [vocab_size]: True for "##" continuation pieces)."""
    tokenizer = self._tokenizer(3)._tokenizer  # the `tokenizers` Tokenizer
    mask_id = tokenizer.token_to_id("[MASK]")
    if mask_id is None:
      raise ValueError(f"the WordPiece vocabulary of {self.model_dir} has no "
                       "[MASK] token, needed by config.train.augment.caption_tokens")
    continuation = np.zeros(self.vocab_size, bool)
    for token, i in tokenizer.get_vocab().items():
      if token.startswith("##") and i < self.vocab_size:
        continuation[i] = True
    return int(mask_id), continuation

  def encode_batch(self, texts: Sequence[str],
                   max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(``int32[N, max_len]`` ids, ``int32[N]`` lengths incl. [CLS]/[SEP])."""
    if max_len is None or max_len < 3:
      raise ValueError(f"max_len must be >= 3 ([CLS], a piece, [SEP]), got "
                       f"{max_len}")
    encoded = self._tokenizer(int(max_len))(list(texts))
    tokens = np.zeros((len(encoded), max_len), np.int32)
    lengths = np.zeros((len(encoded),), np.int32)
    for i, ids in enumerate(encoded):
      tokens[i, :len(ids)] = ids
      lengths[i] = len(ids)
    return tokens, lengths
