"""Official VSE-infinity (PyTorch) weights -> itr_jax `VSEInftyModel` variables.

Works on NumPy arrays keyed by the official `state_dict` names, so reading
them needs no PyTorch here (a checkpoint importer can load the `.pth` with
torch and hand the arrays over).

>>> import numpy as np
>>> w = np.arange(6, dtype=np.float32).reshape(3, 2)   # torch Linear [out, in]
>>> linear({"fc.weight": w, "fc.bias": np.zeros(3)}, "fc.")["kernel"].shape
(2, 3)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]


def linear(state: Arrays, prefix: str) -> dict:
  """`nn.Linear` -> `nn.Dense` params (kernel = weightᵀ; bias if present)."""
  out = {"kernel": np.asarray(state[prefix + "weight"]).T}
  if prefix + "bias" in state:
    out["bias"] = np.asarray(state[prefix + "bias"])
  return out


def gru(state: Arrays, prefix: str, bidirectional: bool = True) -> dict:
  """`nn.GRU` (1 layer) -> `itr_jax.models.GRU` params (gate order r, z, n kept)."""

  def layer(suffix):
    g = lambda name: np.asarray(state[f"{prefix}{name}_l0{suffix}"])
    return {"input_kernel": g("weight_ih").T, "input_bias": g("bias_ih"),
            "recurrent_kernel": g("weight_hh").T, "recurrent_bias": g("bias_hh")}

  out = {"forward": layer("")}
  if bidirectional:
    out["backward"] = layer("_reverse")
  return out


def gpo(state: Arrays, prefix: str) -> dict:
  """The official `GPO` -> `itr_jax.models.GPO` params."""
  return {"gru": gru(state, prefix + "gru."),
          "score": linear(state, prefix + "linear.")}


def image_encoder(state: Arrays) -> tuple[dict, dict]:
  """(params, batch_stats) of `VSEInftyImageEncoder` from `EncoderImageAggr`'s state_dict.

  The official MLP's second BatchNorm (`mlp.bns.1`), never used by its
  forward, is dropped.
  """
  params = {
      "fc": linear(state, "fc."),
      "mlp": {"fc1": linear(state, "mlp.layers.0."),
              "fc2": linear(state, "mlp.layers.1."),
              "bn1": {"scale": np.asarray(state["mlp.bns.0.weight"]),
                      "bias": np.asarray(state["mlp.bns.0.bias"])}},
      "gpo": gpo(state, "gpool."),
  }
  stats = {"mlp": {"bn1": {"mean": np.asarray(state["mlp.bns.0.running_mean"]),
                           "var": np.asarray(state["mlp.bns.0.running_var"])}}}
  return params, stats


def gru_text_encoder(state: Arrays) -> dict:
  """`VSEInftyGRUTextEncoder` params from the bigru branch's `EncoderText`."""
  return {"embed": {"embedding": np.asarray(state["embed.weight"])},
          "gru": gru(state, "rnn."), "gpo": gpo(state, "gpool.")}


def variables(image_state: Arrays, text_state: Arrays) -> dict:
  """`{"params", "batch_stats"}` of a GRU-tower `VSEInftyModel` from the two state_dicts."""
  image_params, stats = image_encoder(image_state)
  return {"params": {"image_encoder": image_params,
                     "text_encoder": gru_text_encoder(text_state)},
          "batch_stats": {"image_encoder": stats}}
