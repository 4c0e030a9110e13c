r"""The tokenizers of CLIP (BPE) and SigLIP (SentencePiece), from their checkpoint files.

Both return fixed-length id arrays at the model's context length, as the
reference pipelines feed them:

* CLIP (`ClipBpe`): ``vocab.json`` + ``merges.txt`` (a Hugging Face CLIP
  directory) or open_clip's ``bpe_simple_vocab_16e6.txt.gz``, through the
  `tokenizers` package with the pipeline of transformers' `CLIPTokenizer`
  (NFC, whitespace collapsed, lowercase, CLIP's split regex, byte-level
  BPE with ``</w>`` word ends): ``<|startoftext|> ... <|endoftext|>``, cut
  to `context_length` keeping the end token last, padded with 0 (OpenAI).
  The model pools the end token at position ``length - 1``.
* SigLIP (`SiglipSentencePiece`): a ``spiece.model`` / ``*.model`` file
  through `sentencepiece`, text canonicalised as big_vision / transformers'
  `SiglipTokenizer` (lowercase, ASCII punctuation removed, whitespace
  collapsed), ``</s>`` appended, cut to `context_length` (``</s>`` kept
  last) and padded with ``</s>`` (big_vision's ``pad_value=1``).

`tokenizer(texts) -> (tokens int32 [N, context_length], lengths int32 [N])`,
lengths counting the tokens up to and including the end token.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import string
from typing import Sequence

import numpy as np

from itr_jax import filesystem as fs

MAX_FILE_BYTES = 64 << 20  # tokenizer files are a few MB; refuse anything absurd


def _read(path: str) -> bytes:
  if not os.path.isfile(path):
    raise ValueError(f"tokenizer file {path!r} does not exist.")
  return fs.read_bounded(path, MAX_FILE_BYTES, what="tokenizer file")


def _bytes_to_unicode() -> list[str]:
  """OpenAI CLIP's printable stand-in of each byte (the byte-level alphabet)."""
  bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
        list(range(ord("®"), ord("ÿ") + 1)))
  cs, n = bs[:], 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return [chr(c) for c in cs]


def _openai_bpe(path: str):
  """(vocab, merges) of OpenAI's bpe_simple_vocab_16e6.txt.gz, as SimpleTokenizer builds them."""
  try:
    lines = gzip.decompress(_read(path)).decode("utf-8").split("\n")
  except (OSError, UnicodeDecodeError, EOFError) as e:
    raise ValueError(f"cannot read CLIP BPE file {path!r}: {e}") from None
  merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1] if m]
  if not merges or any(len(m) != 2 for m in merges):
    raise ValueError(f"{path!r} is not CLIP's BPE merges file (lines of two symbols).")
  alphabet = _bytes_to_unicode()
  tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  return {t: i for i, t in enumerate(tokens)}, merges


class ClipBpe:
  """CLIP's BPE tokenizer from a directory (vocab.json + merges.txt) or a .txt.gz file."""

  def __init__(self, path: str, context_length: int = 77):
    import tokenizers  # pylint: disable=g-import-not-at-top
    from tokenizers import normalizers, pre_tokenizers  # pylint: disable=g-import-not-at-top
    if os.path.isdir(path):
      try:
        vocab = json.loads(_read(os.path.join(path, "vocab.json")))
        merges_text = _read(os.path.join(path, "merges.txt")).decode("utf-8")
      except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"cannot read the CLIP tokenizer files in {path!r}: {e}") from None
      merges = [tuple(line.split()) for line in merges_text.split("\n")
                if line and not line.startswith("#version")]
    else:
      vocab, merges = _openai_bpe(path)
    if (not isinstance(vocab, dict) or any(len(m) != 2 for m in merges)
        or not all(type(i) is int and 0 <= i < 1 << 31 for i in vocab.values())):  # pylint: disable=unidiomatic-typecheck
      raise ValueError(f"{path!r}: vocab.json must map tokens to ids (integers from 0) and "
                       "merges.txt hold pairs of symbols.")
    missing = [t for t in ("<|startoftext|>", "<|endoftext|>") if t not in vocab]
    if missing:
      raise ValueError(f"the CLIP vocabulary in {path!r} lacks {missing}.")
    self.sot, self.eot = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    self.context_length = int(context_length)
    self.vocab_size = len(vocab)
    try:
      model = tokenizers.models.BPE(
          vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
          fuse_unk=False, unk_token="<|endoftext|>")
    except Exception as e:  # pylint: disable=broad-except  (the library raises plain Exception)
      raise ValueError(f"the CLIP tokenizer files in {path!r} do not fit together: {e}") from None
    tok = tokenizers.Tokenizer(model)
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(), normalizers.Replace(tokenizers.Regex(r"\s+"), " "),
        normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
            behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    self._tok = tok

  def encode(self, text: str) -> list[int]:
    ids = [self.sot] + self._tok.encode(text.strip(), add_special_tokens=False).ids + [self.eot]
    if len(ids) > self.context_length:
      ids = ids[:self.context_length - 1] + [self.eot]
    return ids

  def __call__(self, texts: Sequence[str]):
    return _pad([self.encode(t) for t in texts], self.context_length, 0)


class SiglipSentencePiece:
  """SigLIP's SentencePiece tokenizer from its ``.model`` file."""

  def __init__(self, path: str, context_length: int = 64):
    import sentencepiece  # pylint: disable=g-import-not-at-top
    proto = _read(path)
    self._sp = sentencepiece.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(proto)
    except (RuntimeError, OSError) as e:
      raise ValueError(f"{path!r} is not a SentencePiece model: {e}") from None
    self.eos = self._sp.piece_to_id("</s>")
    if self._sp.id_to_piece(self.eos) != "</s>":
      raise ValueError(f"the SentencePiece model {path!r} has no '</s>' piece (SigLIP's end "
                       "and padding token).")
    self.context_length = int(context_length)
    self.vocab_size = self._sp.get_piece_size()
    self._punctuation = str.maketrans("", "", string.punctuation)

  def canonicalize(self, text: str) -> str:
    """big_vision's `prompt_engineering` canonicalisation (as SiglipTokenizer)."""
    return re.sub(r"\s+", " ", text.lower().translate(self._punctuation)).strip()

  def encode(self, text: str) -> list[int]:
    ids = self._sp.encode(self.canonicalize(text))[:self.context_length - 1]
    return ids + [self.eos]

  def __call__(self, texts: Sequence[str]):
    return _pad([self.encode(t) for t in texts], self.context_length, self.eos)


def _pad(rows, length, pad_id):
  tokens = np.full((len(rows), length), pad_id, np.int32)
  for i, ids in enumerate(rows):
    tokens[i, :len(ids)] = ids
  return tokens, np.array([len(r) for r in rows], np.int32)


def load_tokenizer(path: str, family: str, context_length: int):
  """The tokenizer of `family` ("clip" | "siglip") from its checkpoint file(s).

  CLIP: a directory with vocab.json + merges.txt, or bpe_simple_vocab_16e6.txt.gz;
  SigLIP: the SentencePiece model file (or a directory holding spiece.model).
  """
  if family == "clip":
    return ClipBpe(path, context_length)
  if family == "siglip":
    if os.path.isdir(path):
      path = os.path.join(path, "spiece.model")
    return SiglipSentencePiece(path, context_length)
  raise ValueError(f"family must be 'clip' or 'siglip', got {family!r}.")
