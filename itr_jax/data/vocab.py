"""Caption tokenizer and word vocabulary (VSE++ / SCAN ``vocab.json`` format).

Tokenization is ``tokenize(text)``: lowercase, then a regular-expression split
into words and single punctuation marks, with English clitics split off the
way NLTK's Treebank tokenizer does ("don't" -> "do", "n't"; "dog's" -> "dog",
"'s"). It is close enough to ``nltk.word_tokenize`` for captions, without the
nltk dependency. A caption becomes ``<start> w_1 ... w_n <end>``, truncated
(keeping ``<end>`` last) or padded with ``<pad>`` (= 0) to a fixed ``max_len``,
so that every batch has a static shape.

>>> vocab = Vocabulary.build(["A dog.", "a red dog"])
>>> vocab.words[:6]
['<pad>', '<start>', '<end>', '<unk>', 'a', 'dog']
>>> ids, length = vocab.encode("a blue dog", max_len=6)
>>> ids.tolist(), int(length)
([1, 4, 3, 5, 2, 0], 5)
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from itr_jax import filesystem as fs
PAD = "<pad>"
START = "<start>"
END = "<end>"
UNK = "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
MAX_VOCAB_BYTES = 256 << 20  # word lists are a few MB
# How `resolve_vocab` builds a vocabulary: "itr_jax" (train captions, words
# seen >= min_count times, by decreasing count) or "official" (Listwise_ITR /
# SCAN vocab.py: train + dev captions, words seen >= 4 times, first-seen order).
VOCAB_RECIPES = ("itr_jax", "official")
OFFICIAL_MIN_COUNT = 4

# Words (letters/digits), with "n't" and "'s"-style clitics as separate
# tokens, and any other non-space character as a one-character token.
_TOKEN_RE = re.compile(r"\w+(?=n't\b)|n't\b|'\w+|\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
  """Lowercases ``text`` and splits it into word and punctuation tokens.

  >>> tokenize("Two dogs don't play, the cat's ball.")
  ['two', 'dogs', 'do', "n't", 'play', ',', 'the', 'cat', "'s", 'ball', '.']
  """
  return _TOKEN_RE.findall(text.lower())


class Vocabulary:
  """A word <-> id mapping whose first ids are ``<pad>=0, <start>, <end>, <unk>``.

  Words missing from the vocabulary map to ``<unk>``.
  """

  def __init__(self, word2idx: Mapping[str, int]):
    word2idx = {str(w): int(i) for w, i in word2idx.items()}
    missing = [t for t in SPECIAL_TOKENS if t not in word2idx]
    if missing:
      raise ValueError(
          f"vocabulary lacks the special token(s) {missing}; a vocabulary must "
          f"contain {list(SPECIAL_TOKENS)} (with {PAD!r} = 0). Rebuild it with "
          "Vocabulary.build(train_captions) or add the tokens to word2idx.")
    if word2idx[PAD] != 0:
      raise ValueError(f"vocabulary maps {PAD!r} to {word2idx[PAD]}; it must be "
                       "0 because padded token positions are zeros.")
    ids = sorted(word2idx.values())
    if ids != list(range(len(ids))):
      raise ValueError("vocabulary ids must be exactly 0..len-1 with no gaps or "
                       f"duplicates; got {len(ids)} words with ids "
                       f"{ids[:5]}...{ids[-5:]}")
    self.word2idx = word2idx
    self.words = [""] * len(word2idx)
    for w, i in word2idx.items():
      self.words[i] = w
    self.pad_id = word2idx[PAD]
    self.start_id = word2idx[START]
    self.end_id = word2idx[END]
    self.unk_id = word2idx[UNK]

  def __len__(self) -> int:
    return len(self.words)

  def __call__(self, word: str) -> int:
    """Id of ``word``, or of ``<unk>`` when it is not in the vocabulary."""
    return self.word2idx.get(word, self.unk_id)

  def __eq__(self, other) -> bool:
    return isinstance(other, Vocabulary) and self.word2idx == other.word2idx

  @classmethod
  def build(cls, captions: Iterable[str], *, min_count: int = 1,
            order: str = "frequency") -> "Vocabulary":
    """Builds a vocabulary from (training) captions.

    Words occurring at least ``min_count`` times are kept, after the special
    tokens, ordered by decreasing count, then alphabetically
    (``order="frequency"``, deterministic), or in the order they first occur
    (``order="first_seen"``, as the official vocab.py's Counter).

    >>> Vocabulary.build(["b a", "a c"], order="first_seen").words[4:]
    ['b', 'a', 'c']
    """
    if min_count < 1:
      raise ValueError(f"min_count must be >= 1, got {min_count}")
    if order not in ("frequency", "first_seen"):
      raise ValueError(f"order must be 'frequency' or 'first_seen', got {order!r}")
    counts = collections.Counter()  # a dict: keys stay in first-seen order
    for caption in captions:
      counts.update(tokenize(caption))
    kept = [w for w, c in counts.items()
            if c >= min_count and w not in SPECIAL_TOKENS]
    if order == "frequency":
      kept.sort(key=lambda w: (-counts[w], w))
    return cls({w: i for i, w in enumerate(list(SPECIAL_TOKENS) + kept)})

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    """Reads a VSE++/SCAN-style JSON file holding a ``word2idx`` dict."""
    try:
      data = fs.read_json(path, MAX_VOCAB_BYTES, what="vocabulary file")
    except (*fs.errors(path), ValueError) as e:
      raise ValueError(f"cannot read vocabulary file {path!r}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("word2idx"), dict):
      raise ValueError(f"vocabulary file {path!r} must be a JSON object with a "
                       '"word2idx" dict (VSE++/SCAN vocab format)')
    try:
      return cls(data["word2idx"])
    except ValueError as e:
      raise ValueError(f"invalid vocabulary file {path!r}: {e}") from e

  def save(self, path: str) -> None:
    """Writes the VSE++/SCAN JSON format ``{word2idx, idx2word, idx}``."""
    data = {"word2idx": self.word2idx,
            "idx2word": {str(i): w for i, w in enumerate(self.words)},
            "idx": len(self.words)}
    fs.atomic_write_text(path, json.dumps(data, ensure_ascii=False))

  def encode(self, text: str, max_len: int) -> tuple[np.ndarray, int]:
    """Token ids ``int32[max_len]`` of ``<start> text <end>`` and its length.

    Longer captions keep their first ``max_len - 2`` words, then ``<end>``.
    """
    if max_len < 3:
      raise ValueError(f"max_len must be >= 3 (<start>, a word, <end>), "
                       f"got {max_len}")
    words = tokenize(text)[:max_len - 2]
    ids = np.zeros((max_len,), np.int32)
    ids[0] = self.start_id
    ids[1:len(words) + 1] = [self(w) for w in words]
    ids[len(words) + 1] = self.end_id
    return ids, len(words) + 2

  def encode_batch(self, texts: Sequence[str],
                   max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``encode`` for many texts: (``int32[N, max_len]``, ``int32[N]``)."""
    tokens = np.zeros((len(texts), max_len), np.int32)
    lengths = np.zeros((len(texts),), np.int32)
    for i, text in enumerate(texts):
      tokens[i], lengths[i] = self.encode(text, max_len)
    return tokens, lengths

  def decode(self, ids: Sequence[int]) -> str:
    """Words of ``ids`` between ``<start>`` and ``<end>``, space-joined."""
    words = []
    for i in np.asarray(ids).tolist():
      if i == self.end_id:
        break
      if i not in (self.start_id, self.pad_id):
        words.append(self.words[i])
    return " ".join(words)


def check_recipe(recipe: str, min_count: int) -> None:
  """Raises ValueError for an unknown recipe or a min_count it cannot use."""
  if recipe not in VOCAB_RECIPES:
    raise ValueError(f"config.data.vocab_recipe must be one of {VOCAB_RECIPES}, "
                     f"got {recipe!r}.")
  if recipe == "official" and min_count != 1:
    raise ValueError(
        f"config.data.vocab_min_count={min_count} applies to the 'itr_jax' "
        f"vocab_recipe; the 'official' recipe keeps words seen >= "
        f"{OFFICIAL_MIN_COUNT} times. Leave vocab_min_count at 1.")


def shipped_vocab_path(data_dir: str) -> str | None:
  """The official code's vocabulary file for the dataset in `data_dir`, if present.

  The official repositories ship ``vocab/{name}_vocab.json`` (e.g.
  ``f30k_precomp_vocab.json``, built from train + dev captions, count >= 4)
  beside the ``data/{name}`` folders; either place is looked at.
  """
  folder = os.path.normpath(data_dir) if data_dir and not fs.is_remote(data_dir) else data_dir
  if not folder:
    return None
  name = fs.basename(folder.rstrip("/"))
  for path in (fs.join(folder, f"{name}_vocab.json"),
               fs.join(fs.dirname(folder.rstrip("/")), "vocab", f"{name}_vocab.json")):
    if fs.exists(path):
      return path
  return None


def resolve_vocab(data_dir: str, *, vocab_path: str | None = None,
                  workdir: str | None = None, min_count: int = 1,
                  train_split: str = "train", recipe: str = "itr_jax",
                  dev_split: str = "dev",
                  read_captions: Callable[[str], list[str]] | None = None
                  ) -> Vocabulary:
  """Finds or builds the vocabulary for a precomputed dataset.

  Order: ``vocab_path`` if given (non-empty); else ``{workdir}/vocab.json`` if it exists
  (so a resumed run reuses its vocabulary); else ``{data_dir}/vocab.json``;
  else built and saved to ``{workdir}/vocab.json`` when ``workdir`` is given.
  ``recipe="itr_jax"`` builds it from ``{data_dir}/{train_split}_caps.txt``
  (train captions only, never dev/test) with ``min_count``, by frequency;
  ``"official"`` from the train then ``{dev_split}`` captions, words seen at
  least 4 times, in first-seen order (Listwise_ITR's vocab.py), unless the
  file the official code ships for the dataset is there:
  ``{data_dir}/{name}_vocab.json`` or ``{data_dir}/../vocab/{name}_vocab.json``
  with ``name`` the data folder's name (``f30k_precomp_vocab.json`` for
  ``.../f30k_precomp``), read as it is (`shipped_vocab_path`).
  ``read_captions(split)`` replaces reading ``{data_dir}/{split}_caps.txt``
  (e.g. captions from TFDS records).
  """
  check_recipe(recipe, min_count)
  if vocab_path:  # None or "" (the config default) mean "not given"
    return Vocabulary.load(vocab_path)
  if workdir is not None and fs.exists(fs.join(workdir, "vocab.json")):
    return Vocabulary.load(fs.join(workdir, "vocab.json"))
  if fs.exists(fs.join(data_dir, "vocab.json")):  # gs:// TFDS datasets too
    if recipe != "itr_jax":
      logging.warning("data.vocab_recipe=%r is not used: the vocabulary is "
                      "read from %s", recipe, fs.join(data_dir, "vocab.json"))
    return Vocabulary.load(fs.join(data_dir, "vocab.json"))
  shipped = shipped_vocab_path(data_dir) if recipe == "official" else None
  if shipped:
    logging.info("data.vocab_recipe='official': using the shipped %s", shipped)
    vocab = Vocabulary.load(shipped)
    if workdir is not None:
      fs.makedirs(workdir)
      vocab.save(fs.join(workdir, "vocab.json"))
    return vocab
  if read_captions is None:
    from itr_jax.data import precomputed  # pylint: disable=g-import-not-at-top
    read_captions = lambda split: precomputed.read_captions(
        os.path.join(data_dir, f"{split}_caps.txt"))
  captions = read_captions(train_split)
  if recipe == "official":
    captions = captions + read_captions(dev_split)
    vocab = Vocabulary.build(captions, min_count=OFFICIAL_MIN_COUNT, order="first_seen")
  else:
    vocab = Vocabulary.build(captions, min_count=min_count)
  if workdir is not None:
    fs.makedirs(workdir)
    vocab.save(fs.join(workdir, "vocab.json"))
  return vocab
