"""The WordPiece tokenizer of a local sentence-transformers directory."""
from __future__ import annotations

import json
import os
from typing import Optional, Sequence

from itr_jax import filesystem as fs
from itr_jax.text_encoders.file_sha256 import file_sha256


MAX_CONFIG_BYTES = 16 << 20  # a model folder's JSON configs are a few KB


def read_model_json(path: str, default=None):
  """A model folder's JSON config (bounded, ValueError naming it), or `default`
  when the file is absent."""
  if not os.path.isfile(path):
    return default
  return fs.read_json(path, MAX_CONFIG_BYTES, what="model config")


class WordPiece:
  """BERT WordPiece tokenization as sentence-transformers applies it.

  Reads ``tokenizer.json`` (or, failing that, ``vocab.txt`` with
  ``tokenizer_config.json``) via the `tokenizers` package; never the network.
  Padding set in ``tokenizer.json`` is turned off (batches are padded to
  length buckets later) and its truncation length is replaced by
  `max_seq_length`, which sentence-transformers takes from
  ``sentence_bert_config.json`` (256 for all-MiniLM-L6-v2, though its
  ``tokenizer.json`` says 128). Texts are stripped, and lowercased first when
  that config says ``do_lower_case``, as sentence-transformers does.

  `settings` records everything that changes the ids (for provenance).
  """

  def __init__(self, model_dir: str, max_seq_length: Optional[int] = None):
    import tokenizers  # pylint: disable=g-import-not-at-top
    st_config = read_model_json(
        os.path.join(model_dir, "sentence_bert_config.json"), {})
    tok_json = os.path.join(model_dir, "tokenizer.json")
    vocab_txt = os.path.join(model_dir, "vocab.txt")
    if os.path.isfile(tok_json):
      tokenizer = tokenizers.Tokenizer.from_file(tok_json)
      source = tok_json
    elif os.path.isfile(vocab_txt):
      # Older sentence-transformers directories ship only the vocabulary.
      tc = read_model_json(os.path.join(model_dir, "tokenizer_config.json"), {})
      tokenizer = tokenizers.BertWordPieceTokenizer(
          vocab_txt, lowercase=tc.get("do_lower_case", True),
          strip_accents=tc.get("strip_accents"),
          handle_chinese_chars=tc.get("tokenize_chinese_chars", True))
      source = vocab_txt
    else:
      raise ValueError(f"{model_dir!r} has neither tokenizer.json nor "
                       "vocab.txt: not a BERT sentence-transformers directory")
    if max_seq_length is None:
      max_seq_length = st_config.get("max_seq_length", 512)
    if int(max_seq_length) < 2:
      raise ValueError(f"max_seq_length must be >= 2 ([CLS] and [SEP]), got "
                       f"{max_seq_length}")
    self.max_seq_length = int(max_seq_length)
    self.do_lower_case = bool(st_config.get("do_lower_case", False))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=self.max_seq_length)
    self._tokenizer = tokenizer
    normalizer = json.loads(tokenizer.to_str()).get("normalizer")
    self.settings = {
        "tokenizer_file": os.path.basename(source),
        "tokenizer_sha256": file_sha256(source),
        "vocab_size": tokenizer.get_vocab_size(),
        "max_seq_length": self.max_seq_length,
        "truncation": "longest_first",
        "do_lower_case": self.do_lower_case,
        "normalizer": normalizer,
    }

  def __call__(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, ``[CLS] ... [SEP]``, at most `max_seq_length`."""
    if isinstance(texts, str):
      raise ValueError("texts must be a list of strings, not one string; "
                       "wrap it as [text]")
    texts = [str(t).strip() for t in texts]
    if self.do_lower_case:
      texts = [t.lower() for t in texts]
    return [e.ids for e in self._tokenizer.encode_batch(texts)]
