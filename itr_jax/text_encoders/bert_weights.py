"""Hugging Face BERT weights (safetensors) -> the `BertEncoder` parameter tree."""
from __future__ import annotations

import os
import re
from typing import Mapping

import numpy as np

from itr_jax.text_encoders.bert import BertConfig

# (Hugging Face name pattern, Flax path template). The leaf kind is decided by
# the last name: Linear "weight" is transposed into a Dense "kernel";
# LayerNorm "weight"/"gamma" becomes "scale", "bias"/"beta" stays "bias";
# Embedding "weight" becomes "embedding".
_RULES = [
    (r"embeddings\.(word|position|token_type)_embeddings\.weight",
     ("embeddings", "{0}_embeddings", "embedding")),
    (r"embeddings\.LayerNorm\.(\w+)", ("embeddings", "layer_norm", "LN:{0}")),
    (r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(\w+)",
     ("layer_{0}", "attention", "{1}", "LIN:{2}")),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.(\w+)",
     ("layer_{0}", "attention", "output", "LIN:{1}")),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(\w+)",
     ("layer_{0}", "attention_layer_norm", "LN:{1}")),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.(\w+)",
     ("layer_{0}", "intermediate", "LIN:{1}")),
    (r"encoder\.layer\.(\d+)\.output\.dense\.(\w+)",
     ("layer_{0}", "output", "LIN:{1}")),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm\.(\w+)",
     ("layer_{0}", "output_layer_norm", "LN:{1}")),
]
# Tensors a BertModel checkpoint carries that mean pooling does not use.
_UNUSED = re.compile(r"(pooler\..*|embeddings\.position_ids)")
_LEAF = {"LN:weight": "scale", "LN:gamma": "scale", "LN:bias": "bias",
         "LN:beta": "bias", "LIN:weight": "kernel", "LIN:bias": "bias"}


def _flax_path(name: str):
  """Flax path and whether to transpose, or None for an unknown name."""
  for pattern, template in _RULES:
    m = re.fullmatch(pattern, name)
    if m:
      path = tuple(t.format(*m.groups()) for t in template)
      leaf = _LEAF.get(path[-1], path[-1])
      return path[:-1] + (leaf,), path[-1] == "LIN:weight"
  return None


def expected_shapes(config: BertConfig) -> dict:
  """Flat ``{flax path: shape}`` of every `BertEncoder` parameter."""
  h, f = config.hidden_size, config.intermediate_size
  shapes = {
      ("embeddings", "word_embeddings", "embedding"): (config.vocab_size, h),
      ("embeddings", "position_embeddings", "embedding"):
          (config.max_position_embeddings, h),
      ("embeddings", "token_type_embeddings", "embedding"):
          (config.type_vocab_size, h),
      ("embeddings", "layer_norm", "scale"): (h,),
      ("embeddings", "layer_norm", "bias"): (h,),
  }
  for i in range(config.num_hidden_layers):
    layer = f"layer_{i}"
    for name in ("query", "key", "value", "output"):
      shapes[(layer, "attention", name, "kernel")] = (h, h)
      shapes[(layer, "attention", name, "bias")] = (h,)
    shapes[(layer, "intermediate", "kernel")] = (h, f)
    shapes[(layer, "intermediate", "bias")] = (f,)
    shapes[(layer, "output", "kernel")] = (f, h)
    shapes[(layer, "output", "bias")] = (h,)
    for norm in ("attention_layer_norm", "output_layer_norm"):
      shapes[(layer, norm, "scale")] = (h,)
      shapes[(layer, norm, "bias")] = (h,)
  return shapes


def bert_params_from_state_dict(state: Mapping[str, np.ndarray],
                                config: BertConfig) -> dict:
  """Maps a PyTorch ``BertModel`` state dict onto the `BertEncoder` tree.

  Linear weights ``[out, in]`` become Dense kernels ``[in, out]``. A
  ``bert.`` prefix (task-head checkpoints) is stripped; pooler and task-head
  tensors are ignored. Every parameter must be present with the shape the
  config implies, else ValueError naming the tensor.

  >>> c = BertConfig(vocab_size=5, hidden_size=4, num_hidden_layers=1,
  ...                num_attention_heads=1, intermediate_size=8)
  >>> sd = {"embeddings.word_embeddings.weight": np.zeros((5, 4))}
  >>> bert_params_from_state_dict(sd, c)  # doctest: +ELLIPSIS
  Traceback (most recent call last):
  ValueError: checkpoint lacks 20 BERT parameters, e.g. [...]
  """
  if any(k.startswith("bert.") for k in state):
    state = {k[len("bert."):]: v for k, v in state.items()
             if k.startswith("bert.")}
  want = expected_shapes(config)
  flat = {}
  for name, value in state.items():
    mapped = _flax_path(name)
    if mapped is None:
      if _UNUSED.fullmatch(name):
        continue
      raise ValueError(f"unexpected tensor {name!r} in the checkpoint: not a "
                       "BertModel parameter (is this a BERT checkpoint?)")
    path, transpose = mapped
    value = np.asarray(value, dtype=np.float32)
    value = value.T if transpose else value
    if path not in want:
      raise ValueError(f"checkpoint tensor {name!r} does not fit the config "
                       f"(no parameter {'/'.join(path)}); check config.json's "
                       "num_hidden_layers")
    if value.shape != want[path]:
      raise ValueError(f"checkpoint tensor {name!r} has shape {value.shape} "
                       f"(after transposing Linear weights) but the config "
                       f"needs {want[path]}")
    flat[path] = value
  missing = sorted("/".join(p) for p in want if p not in flat)
  if missing:
    raise ValueError(f"checkpoint lacks {len(missing)} BERT parameters, "
                     f"e.g. {missing[:3]}")
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def load_bert_params(path: str, config: BertConfig) -> dict:
  """Reads a ``model.safetensors`` file into a `BertEncoder` parameter tree.

  Uses safetensors' NumPy backend (no PyTorch). For `SentenceBert` wrap the
  result as ``{'params': {'bert': tree}}``.
  """
  if not os.path.isfile(path):
    raise ValueError(f"missing weights file {path!r}: a model directory needs "
                     "model.safetensors (PyTorch .bin files are not read)")
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return bert_params_from_state_dict(load_file(path), config)

