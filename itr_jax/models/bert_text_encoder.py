r"""A pretrained BERT text tower (sentence-transformers' MiniLM by default).

VSE-infinity's BERT variant in the VSE framework: WordPiece ids go through a
pretrained BERT, token states are mean-pooled over the real tokens (as
sentence-transformers, so with all-MiniLM-L6-v2 weights the pooled vector
points where the RSC caption embeddings do), then a new linear projection
maps them into the joint space:

.. math:: t = \mathrm{l2norm}(W \bar h + b), \qquad
          \bar h = \frac{1}{\ell} \sum_{j < \ell} \mathrm{BERT}(w)_j

with :math:`\ell` the caption's token count (``[CLS] ... [SEP]``). Parameters:
``text_encoder/sentence_bert/bert/...`` (the `BertEncoder` tree, where
`with_pretrained_bert` puts the pretrained weights; fine-tune it with a lower
learning rate, e.g. ``config.optim.lr_multipliers = {"sentence_bert": 0.1}``)
and ``text_encoder/projection/{kernel,bias}`` (trained from scratch).

>>> import jax, jax.numpy as jnp
>>> from itr_jax.text_encoders import BertConfig
>>> c = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
...                num_attention_heads=2, intermediate_size=16)
>>> tower = BertTextEncoder(c, embed_size=4)
>>> tokens, lengths = jnp.array([[2, 7, 3, 0], [2, 3, 0, 0]]), jnp.array([3, 2])
>>> params = tower.init(jax.random.key(0), tokens, lengths)["params"]
>>> sorted(params), sorted(params["sentence_bert"])
(['projection', 'sentence_bert'], ['bert'])
>>> tower.apply({"params": params}, tokens, lengths).shape
(2, 4)
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from itr_jax.models.normalize import l2_normalize
from itr_jax.models.text_encoder import check_caption_batch

Dtype = Any
# Where the pretrained BertEncoder tree sits in a VSEModel's params.
BERT_PATH = ("text_encoder", "sentence_bert", "bert")


class BertTextEncoder(nn.Module):
  """WordPiece ids [B, L] + lengths [B] -> unit-norm caption embeddings [B, E].

  Positions >= length are masked out of attention and pooling, so batches can
  be padded to any L (<= the model's max_position_embeddings). Dropout is
  off (deterministic): the train step passes no dropout rng. Lengths must
  satisfy 1 <= lengths <= L (not checked under jit).

  Attributes:
    bert_config: the `itr_jax.text_encoders.BertConfig` of the weights.
    embed_size: E, the joint embedding size.
    dtype: computation dtype (None: float32); the output is float32.
    param_dtype: dtype of the projection's parameters (BERT's are float32).
    precision: matmul precision inside BERT (see `BertEncoder`).
  """
  bert_config: Any
  embed_size: int = 1024
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    # Imported here: itr_jax.text_encoders imports itr_jax.models itself.
    from itr_jax.text_encoders.bert import SentenceBert  # pylint: disable=g-import-not-at-top
    check_caption_batch(tokens, lengths, "WordPiece ids")
    mask = (jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]).astype(
        jnp.int32)
    pooled = SentenceBert(self.bert_config, normalize=False, dtype=self.dtype,
                          precision=self.precision, name="sentence_bert")(
                              tokens, mask)
    projected = nn.Dense(self.embed_size, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="projection")(pooled)
    return l2_normalize(projected)


def bert_model_dir(bert_path: Optional[str] = None) -> str:
  """`bert_path`, or the packaged all-MiniLM-L6-v2 directory when empty."""
  from itr_jax.text_encoders.sentence_encoder import default_model_dir  # pylint: disable=g-import-not-at-top
  if not bert_path:
    return default_model_dir()
  if not os.path.isdir(bert_path):
    raise ValueError(f"config.model.bert_path={bert_path!r} is not a "
                     "directory; give a local sentence-transformers/BERT "
                     "model directory, or '' for the packaged "
                     "all-MiniLM-L6-v2")
  return os.fspath(bert_path)


def bert_config(bert_path: Optional[str] = None):
  """The `BertConfig` of `bert_path` (its config.json; reads no weights)."""
  from itr_jax.text_encoders.bert import BertConfig  # pylint: disable=g-import-not-at-top
  return BertConfig.from_json_file(
      os.path.join(bert_model_dir(bert_path), "config.json"))


def pretrained_text_tower(model_config: Mapping) -> Optional[dict]:
  """Pretrained BERT params for `config.model`, or None for the GRU tower.

  Reads ``config.model.bert_path`` ('' or absent: the packaged
  all-MiniLM-L6-v2); float32 NumPy arrays in the `BertEncoder` layout.
  """
  if model_config.get("text_tower", "gru") != "bert":
    return None
  from itr_jax.text_encoders.sentence_encoder import load_pretrained_bert  # pylint: disable=g-import-not-at-top
  return load_pretrained_bert(
      bert_model_dir(model_config.get("bert_path") or None)).params


def _flat(tree, prefix=()):
  if isinstance(tree, Mapping):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, prefix + (key,)))
    return out
  return {prefix: tree}


def with_pretrained_bert(params: Mapping, bert_params: Mapping) -> dict:
  """`params` with ``text_encoder/sentence_bert/bert`` replaced by `bert_params`.

  Pure (returns a new tree; traceable under jit). Every initialised leaf must
  have a pretrained counterpart of the same shape (cast to the initialised
  dtype), and vice versa; otherwise ValueError.

  >>> zeros = np.zeros(2, np.float32)
  >>> p = {"image_encoder": {"w": zeros},
  ...      "text_encoder": {"projection": {"b": zeros},
  ...                       "sentence_bert": {"bert": {"x": zeros}}}}
  >>> q = with_pretrained_bert(p, {"x": np.ones(2)})
  >>> q["text_encoder"]["sentence_bert"]["bert"]["x"].tolist()
  [1.0, 1.0]
  >>> q["image_encoder"] is p["image_encoder"]  # the rest is shared
  True
  """
  node = params
  for key in BERT_PATH:
    if not isinstance(node, Mapping) or key not in node:
      raise ValueError(f"params have no {'/'.join(BERT_PATH)}: the model's "
                       "text tower is not BERT (set config.model.text_tower="
                       "'bert')")
    node = node[key]
  want, got = _flat(node), _flat(bert_params)
  missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
  if missing or extra:
    raise ValueError(f"pretrained BERT params do not fit the text tower: "
                     f"missing {['/'.join(k) for k in missing][:5]}, "
                     f"unexpected {['/'.join(k) for k in extra][:5]}")
  for key, leaf in want.items():
    if tuple(np.shape(got[key])) != tuple(np.shape(leaf)):
      raise ValueError(f"pretrained BERT param {'/'.join(key)} has shape "
                       f"{np.shape(got[key])}, the text tower "
                       f"{np.shape(leaf)}: config.model.bert_path and the "
                       "weights disagree")

  def cast(tree, initialised):
    if isinstance(initialised, Mapping):
      return {k: cast(tree[k], v) for k, v in initialised.items()}
    return jnp.asarray(tree, dtype=jnp.result_type(initialised))

  def replace(tree, path):
    if not path:
      return cast(bert_params, tree)
    return {**tree, path[0]: replace(tree[path[0]], path[1:])}

  return replace(params, BERT_PATH)
