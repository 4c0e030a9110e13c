"""Sentence encoders in pure JAX (BERT / sentence-transformers, no PyTorch).

The names below are imported on first use (PEP 562): light submodules such as
`file_sha256` (used by data and checkpoint code, and so by every command's
start-up) must not pull in Flax and JAX.
"""
import importlib

_EXPORTS = {
    "BertConfig": "bert", "BertEncoder": "bert", "SentenceBert": "bert",
    "bert_params_from_state_dict": "bert_weights", "load_bert_params": "bert_weights",
    "mean_pool": "mean_pool", "WordPiece": "wordpiece",
    "default_model_dir": "sentence_encoder", "load_pretrained_bert": "sentence_encoder",
    "PretrainedBert": "sentence_encoder", "SentenceEncoder": "sentence_encoder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__():
  return sorted(list(globals()) + __all__)
