"""Official SGRAF (PyTorch) weights -> itr_jax `SGRAF` variables, in NumPy only.

An official checkpoint holds three state dicts (image encoder, text encoder,
similarity encoder); `variables_from_torch` takes them flattened into one
dict with the prefixes `img_enc.`, `txt_enc.`, `sim_enc.` (arrays, any
array-like) and returns `{"params": ..., "batch_stats": ...}` for
`SGRAF(module=...)`. PyTorch Linear weights [out, in] become Flax kernels
[in, out]; GRU weights become `GRULayer`'s (`weight_ih_l0.T` ->
`input_kernel`, `*_reverse` -> the backward layer).

>>> import numpy as np
>>> w = {"weight": np.ones((2, 3)), "bias": np.zeros(2)}
>>> dense(w)["kernel"].shape
(3, 2)
"""
from __future__ import annotations

import numpy as np


def dense(w) -> dict:
  return {"kernel": np.asarray(w["weight"], np.float32).T,
          "bias": np.asarray(w["bias"], np.float32)}


def _sub(state: dict, prefix: str) -> dict:
  return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _gru_layer(rnn: dict, suffix: str) -> dict:
  f32 = lambda name: np.asarray(rnn[name + suffix], np.float32)
  return {"input_kernel": f32("weight_ih_l0").T, "input_bias": f32("bias_ih_l0"),
          "recurrent_kernel": f32("weight_hh_l0").T, "recurrent_bias": f32("bias_hh_l0")}


def _batch_norm(bn: dict):
  f32 = lambda name: np.asarray(bn[name], np.float32)
  return ({"scale": f32("weight"), "bias": f32("bias")},
          {"mean": f32("running_mean"), "var": f32("running_var")})


def _self_attention(sa: dict, batch_norm: bool):
  params = {"embedding_local": dense(_sub(sa, "embedding_local.0.")),
            "embedding_global": dense(_sub(sa, "embedding_global.0.")),
            "embedding_common": dense(_sub(sa, "embedding_common.0."))}
  stats = {}
  if batch_norm:
    params["bn_local"], stats["bn_local"] = _batch_norm(_sub(sa, "embedding_local.1."))
    params["bn_global"], stats["bn_global"] = _batch_norm(_sub(sa, "embedding_global.1."))
  return params, stats


def variables_from_torch(state: dict, module: str) -> dict:
  """`{"params", "batch_stats"}` of `SGRAF(module=module)` from official weights.

  `module`: "sgr" or "saf". Raises KeyError naming a missing weight.
  """
  img, txt, sim = (_sub(state, p) for p in ("img_enc.", "txt_enc.", "sim_enc."))
  rnn = _sub(txt, "cap_rnn.")
  params = {
      "fc": dense(_sub(img, "fc.")),
      "embed": {"embedding": np.asarray(txt["embed.weight"], np.float32)},
      "gru": {"forward": _gru_layer(rnn, "")},
      "sim_tranloc_w": dense(_sub(sim, "sim_tranloc_w.")),
      "sim_tranglo_w": dense(_sub(sim, "sim_tranglo_w.")),
      "sim_eval_w": dense(_sub(sim, "sim_eval_w.")),
  }
  if "weight_ih_l0_reverse" in rnn:
    params["gru"]["backward"] = _gru_layer(rnn, "_reverse")
  params["v_global_w"], v_stats = _self_attention(_sub(sim, "v_global_w."), True)
  params["t_global_w"], _ = _self_attention(_sub(sim, "t_global_w."), False)
  batch_stats = {"v_global_w": v_stats}
  if module == "sgr":
    steps = sorted({int(k.split(".")[1]) for k in sim if k.startswith("SGR_module.")})
    for i in steps:
      step = _sub(sim, f"SGR_module.{i}.")
      params[f"SGR_module_{i}"] = {n: dense(_sub(step, n + "."))
                                   for n in ("graph_query_w", "graph_key_w", "sim_graph_w")}
  elif module == "saf":
    saf = _sub(sim, "SAF_module.")
    (bn_params, bn_stats) = _batch_norm(_sub(saf, "bn."))
    params["SAF_module"] = {"attn_sim_w": dense(_sub(saf, "attn_sim_w.")),
                            "bn_scale": bn_params["scale"], "bn_bias": bn_params["bias"]}
    batch_stats["SAF_module"] = {"bn_mean": bn_stats["mean"], "bn_var": bn_stats["var"]}
  else:
    raise ValueError(f"module must be 'sgr' or 'saf', got {module!r}.")
  return {"params": params, "batch_stats": batch_stats}
