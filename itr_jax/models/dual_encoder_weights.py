"""Published CLIP / SigLIP weights -> `DualEncoder` params (NumPy, no PyTorch).

Three source layouts, each a flat {name: array} dict:

* `from_hf`: Hugging Face `CLIPModel` / `SiglipModel` (``model.safetensors``
  + ``config.json``);
* `from_openai`: OpenAI CLIP / open_clip state dicts (``visual.conv1.weight``,
  ``transformer.resblocks.0.attn.in_proj_weight``, ...);
* `from_big_vision`: big_vision SigLIP ``.npz`` (``params/img/...``,
  ``params/txt/...``, ``params/t``, ``params/b``).

Each returns `(arch, params)`: the `DualEncoderConfig` fields the weights
imply (sizes from the array shapes; head counts, activation and image
normalisation from the source's config or convention) and the params tree.
PyTorch linear weights [out, in] become kernels [in, out]; attention
projections are split into heads [D, H, D/H].

>>> import numpy as np
>>> w, b = np.arange(12.).reshape(4, 3), np.zeros(4)   # torch Linear(3 -> 4)
>>> _dense(w, b)["kernel"].shape
(3, 4)
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np

from itr_jax.models import dual_encoder

Weights = Mapping[str, np.ndarray]


class _Reader:
  """Looks names up with one clear error for a missing or misshapen array."""

  def __init__(self, weights: Weights, source: str):
    self.weights, self.source, self.used = weights, source, set()

  def __call__(self, name: str, ndim: Optional[int] = None) -> np.ndarray:
    if name not in self.weights:
      raise ValueError(f"the {self.source} checkpoint has no {name!r}; is it a "
                       f"{self.source} CLIP/SigLIP checkpoint?")
    value = np.asarray(self.weights[name])
    if ndim is not None and value.ndim != ndim:
      raise ValueError(f"{self.source} checkpoint entry {name!r} has shape {value.shape}, "
                       f"expected {ndim} dimensions.")
    if not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f"{self.source} checkpoint entry {name!r} has dtype {value.dtype}, "
                       "expected floating point.")
    self.used.add(name)
    return value.astype(np.float32)

  def has(self, name: str) -> bool:
    return name in self.weights

  def check_all_used(self, ignore: Callable[[str], bool] = lambda n: False):
    unused = sorted(n for n in self.weights if n not in self.used and not ignore(n))
    if unused:
      raise ValueError(f"the {self.source} checkpoint has {len(unused)} entries this "
                       f"architecture does not use, e.g. {unused[:3]}; it is not a "
                       "plain CLIP/SigLIP dual encoder.")


def _dense(w, b=None):
  out = {"kernel": np.ascontiguousarray(w.T)}
  if b is not None:
    out["bias"] = b
  return out


def _norm(scale, bias):
  return {"scale": scale, "bias": bias}


def _heads_split(w, b, heads):
  """torch [D_out, D_in] q/k/v projection -> DenseGeneral kernel [D_in, H, D/H]."""
  if w.shape[0] % heads:
    raise ValueError(f"attention width {w.shape[0]} is not divisible by {heads} heads.")
  return {"kernel": w.T.reshape(w.shape[1], heads, -1), "bias": b.reshape(heads, -1)}


def _attention(q, k, v, o, heads):
  """Each of q, k, v, o a torch (weight [out, in], bias) pair."""
  out_w, out_b = o
  return {"query": _heads_split(*q, heads), "key": _heads_split(*k, heads),
          "value": _heads_split(*v, heads),
          "out": {"kernel": out_w.T.reshape(heads, -1, out_w.shape[0]), "bias": out_b}}


def _in_proj(w, b):
  """nn.MultiheadAttention's packed in_proj -> three (weight, bias) pairs."""
  d = w.shape[0] // 3
  return [(w[i * d:(i + 1) * d], b[i * d:(i + 1) * d]) for i in range(3)]


def _count_layers(weights: Weights, prefix: str) -> int:
  n = 0
  while any(k.startswith(f"{prefix}{n}.") or k.startswith(f"{prefix}{n}/") for k in weights):
    n += 1
  if not n:
    raise ValueError(f"the checkpoint has no layers under {prefix!r}.")
  return n


def _hf_encoder(r, prefix, layers, heads):
  blocks = {}
  for i in range(layers):
    p = f"{prefix}.encoder.layers.{i}."
    lin = lambda n: (r(p + n + ".weight", 2), r(p + n + ".bias", 1))
    ln = lambda n: _norm(r(p + n + ".weight", 1), r(p + n + ".bias", 1))
    blocks[f"block_{i}"] = {
        "ln_1": ln("layer_norm1"), "ln_2": ln("layer_norm2"),
        "attn": _attention(lin("self_attn.q_proj"), lin("self_attn.k_proj"),
                           lin("self_attn.v_proj"), lin("self_attn.out_proj"), heads),
        "mlp": {"fc1": _dense(*lin("mlp.fc1")), "fc2": _dense(*lin("mlp.fc2"))}}
  return blocks


_HF_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
            "gelu_new": "gelu_tanh"}


def from_hf(weights: Weights, config: Mapping) -> tuple[dict, dict]:
  """(arch fields, params) of a Hugging Face CLIPModel / SiglipModel.

  `config` is its ``config.json`` (model_type "clip" or "siglip").
  """
  family = config.get("model_type")
  if family not in dual_encoder.FAMILIES:
    raise ValueError(f"config.json has model_type {family!r}; only 'clip' and 'siglip' "
                     "(CLIPModel, SiglipModel) are supported.")
  tc, vc = config.get("text_config", {}), config.get("vision_config", {})
  act = tc.get("hidden_act", "quick_gelu" if family == "clip" else "gelu_pytorch_tanh")
  if act not in _HF_ACTS or vc.get("hidden_act", act) != act:
    raise ValueError(f"config.json hidden_act {act!r} / {vc.get('hidden_act')!r} is not one "
                     f"of the supported activations {sorted(_HF_ACTS)} (the same for both towers).")
  r = _Reader(weights, "Hugging Face")
  v, t = "vision_model.", "text_model."
  patch = r(v + "embeddings.patch_embedding.weight", 4)  # [D, 3, p, p]
  pos_v = r(v + "embeddings.position_embedding.weight", 2)
  width, _, p_size, _ = patch.shape
  clip = family == "clip"
  v_heads, t_heads = int(vc.get("num_attention_heads", 12)), int(tc.get("num_attention_heads", 8 if clip else 12))
  image = {"patch_embed": {"kernel": patch.transpose(2, 3, 1, 0)},
           "pos_embed": pos_v,
           "encoder": _hf_encoder(r, v[:-1], _count_layers(weights, v + "encoder.layers."), v_heads),
           "ln_post": _norm(r(v + "post_layernorm.weight", 1), r(v + "post_layernorm.bias", 1))}
  if clip:
    image["cls"] = r(v + "embeddings.class_embedding", 1)
    image["ln_pre"] = _norm(r(v + "pre_layrnorm.weight", 1), r(v + "pre_layrnorm.bias", 1))
    image["proj"] = _dense(r("visual_projection.weight", 2))
  else:
    image["patch_embed"]["bias"] = r(v + "embeddings.patch_embedding.bias", 1)
    h = v + "head."
    lin = lambda n: (r(h + n + ".weight", 2), r(h + n + ".bias", 1))
    image["map_head"] = {
        "probe": r(h + "probe", 3),
        "attn": _attention(*_in_proj(r(h + "attention.in_proj_weight", 2),
                                     r(h + "attention.in_proj_bias", 1)),
                           lin("attention.out_proj"), v_heads),
        "ln": _norm(r(h + "layernorm.weight", 1), r(h + "layernorm.bias", 1)),
        "mlp": {"fc1": _dense(*lin("mlp.fc1")), "fc2": _dense(*lin("mlp.fc2"))}}
  tok = r(t + "embeddings.token_embedding.weight", 2)
  pos_t = r(t + "embeddings.position_embedding.weight", 2)
  text = {"token_embed": {"embedding": tok}, "pos_embed": pos_t,
          "encoder": _hf_encoder(r, t[:-1], _count_layers(weights, t + "encoder.layers."), t_heads),
          "ln_final": _norm(r(t + "final_layer_norm.weight", 1), r(t + "final_layer_norm.bias", 1))}
  if clip:
    text["proj"] = _dense(r("text_projection.weight", 2))
  else:
    text["proj"] = _dense(r(t + "head.weight", 2), r(t + "head.bias", 1))
  params = {"image_encoder": image, "text_encoder": text,
            "logit_scale": r("logit_scale").reshape(())}
  if not clip:
    params["logit_bias"] = r("logit_bias").reshape(())
  # position_ids buffers are saved by some versions of transformers.
  r.check_all_used(lambda n: n.endswith("position_ids"))
  embed = (params["image_encoder"]["proj"]["kernel"].shape[1] if clip else width)
  n_patches = pos_v.shape[0] - int(clip)
  image_size = int(vc.get("image_size", int(round(n_patches ** 0.5)) * p_size))
  arch = dict(
      family=family, embed_dim=int(embed), image_size=image_size, patch_size=int(p_size),
      vision_width=int(width), vision_layers=len(image["encoder"]), vision_heads=v_heads,
      vision_mlp=int(image["encoder"]["block_0"]["mlp"]["fc1"]["kernel"].shape[1]),
      text_width=int(tok.shape[1]), text_layers=len(text["encoder"]), text_heads=t_heads,
      text_mlp=int(text["encoder"]["block_0"]["mlp"]["fc1"]["kernel"].shape[1]),
      vocab_size=int(tok.shape[0]), context_length=int(pos_t.shape[0]), act=_HF_ACTS[act],
      ln_eps=float(tc.get("layer_norm_eps", 1e-5 if clip else 1e-6)),
      pad_id=int(tc.get("pad_token_id", 0 if clip else 1) or 0),
      mean=dual_encoder.CLIP_MEAN if clip else (0.5, 0.5, 0.5),
      std=dual_encoder.CLIP_STD if clip else (0.5, 0.5, 0.5))
  return arch, params


def _openai_encoder(r, prefix, layers, heads):
  blocks = {}
  for i in range(layers):
    p = f"{prefix}transformer.resblocks.{i}."
    lin = lambda n: (r(p + n + ".weight", 2), r(p + n + ".bias", 1))
    ln = lambda n: _norm(r(p + n + ".weight", 1), r(p + n + ".bias", 1))
    q, k, v = _in_proj(r(p + "attn.in_proj_weight", 2), r(p + "attn.in_proj_bias", 1))
    blocks[f"block_{i}"] = {
        "ln_1": ln("ln_1"), "ln_2": ln("ln_2"),
        "attn": _attention(q, k, v, lin("attn.out_proj"), heads),
        "mlp": {"fc1": _dense(*lin("mlp.c_fc")), "fc2": _dense(*lin("mlp.c_proj"))}}
  return blocks


def from_openai(weights: Weights, *, vision_heads: int = 0, text_heads: int = 0,
                act: str = "quick_gelu") -> tuple[dict, dict]:
  """(arch fields, params) of an OpenAI CLIP / open_clip ViT state dict.

  Head counts are not stored in the weights: 0 means OpenAI's / open_clip's
  convention, width // 64. `act` is "quick_gelu" for OpenAI's weights and
  open_clip's `*-quickgelu` models, "gelu" for the other open_clip models.
  """
  weights = {k[len("module."):] if k.startswith("module.") else k: v for k, v in weights.items()}
  r = _Reader(weights, "OpenAI/open_clip")
  if not r.has("visual.conv1.weight"):
    raise ValueError("the state dict has no 'visual.conv1.weight': only ViT CLIP models "
                     "(not ResNet ones) in the OpenAI / open_clip layout are supported.")
  patch = r("visual.conv1.weight", 4)
  width, _, p_size, _ = patch.shape
  tok = r("token_embedding.weight", 2)
  t_width = tok.shape[1]
  vision_heads = vision_heads or width // 64
  text_heads = text_heads or t_width // 64
  pos_v = r("visual.positional_embedding", 2)
  image = {"patch_embed": {"kernel": patch.transpose(2, 3, 1, 0)},
           "cls": r("visual.class_embedding", 1), "pos_embed": pos_v,
           "ln_pre": _norm(r("visual.ln_pre.weight", 1), r("visual.ln_pre.bias", 1)),
           "encoder": _openai_encoder(r, "visual.", _count_layers(
               weights, "visual.transformer.resblocks."), vision_heads),
           "ln_post": _norm(r("visual.ln_post.weight", 1), r("visual.ln_post.bias", 1)),
           "proj": {"kernel": r("visual.proj", 2)}}
  pos_t = r("positional_embedding", 2)
  text = {"token_embed": {"embedding": tok}, "pos_embed": pos_t,
          "encoder": _openai_encoder(r, "", _count_layers(weights, "transformer.resblocks."),
                                     text_heads),
          "ln_final": _norm(r("ln_final.weight", 1), r("ln_final.bias", 1)),
          "proj": {"kernel": r("text_projection", 2)}}
  params = {"image_encoder": image, "text_encoder": text,
            "logit_scale": r("logit_scale").reshape(())}
  # OpenAI's files also hold input_resolution / context_length / vocab_size ints;
  # open_clip's text attn_mask buffer is the causal mask the model builds itself.
  r.check_all_used(lambda n: n in ("input_resolution", "context_length", "vocab_size", "attn_mask"))
  arch = dict(
      family="clip", embed_dim=int(image["proj"]["kernel"].shape[1]),
      image_size=int(round((pos_v.shape[0] - 1) ** 0.5)) * int(p_size), patch_size=int(p_size),
      vision_width=int(width), vision_layers=len(image["encoder"]), vision_heads=vision_heads,
      vision_mlp=int(image["encoder"]["block_0"]["mlp"]["fc1"]["kernel"].shape[1]),
      text_width=int(t_width), text_layers=len(text["encoder"]), text_heads=text_heads,
      text_mlp=int(text["encoder"]["block_0"]["mlp"]["fc1"]["kernel"].shape[1]),
      vocab_size=int(tok.shape[0]), context_length=int(pos_t.shape[0]), act=act, ln_eps=1e-5,
      pad_id=0, mean=dual_encoder.CLIP_MEAN, std=dual_encoder.CLIP_STD)
  return arch, params


def _bv_block(r, p):
  get = lambda n, nd=None: r(f"{p}/{n}", nd)
  dense = lambda n: {"kernel": get(n + "/kernel", 2), "bias": get(n + "/bias", 1)}
  norm = lambda n: {"scale": get(n + "/scale", 1), "bias": get(n + "/bias", 1)}
  mha = lambda n: {
      **{k: {"kernel": get(f"{n}/{k}/kernel", 3), "bias": get(f"{n}/{k}/bias", 2)}
         for k in ("query", "key", "value")},
      "out": {"kernel": get(f"{n}/out/kernel", 3), "bias": get(f"{n}/out/bias", 1)}}
  return dense, norm, mha


def _bv_encoder(r, weights, prefix):
  blocks = {}
  for i in range(_count_layers(weights, f"{prefix}/encoderblock_")):
    dense, norm, mha = _bv_block(r, f"{prefix}/encoderblock_{i}")
    blocks[f"block_{i}"] = {
        "ln_1": norm("LayerNorm_0"), "ln_2": norm("LayerNorm_1"),
        "attn": mha("MultiHeadDotProductAttention_0"),
        "mlp": {"fc1": dense("MlpBlock_0/Dense_0"), "fc2": dense("MlpBlock_0/Dense_1")}}
  return blocks


def from_big_vision(weights: Weights, *, image_size: int = 0) -> tuple[dict, dict]:
  """(arch fields, params) of a big_vision SigLIP `.npz` (``params/img``, ``params/txt``).

  The input resolution is not stored: `image_size` 0 means patches x patch
  size (right for B/16 at 224, 256, 384, 512; give 384 for So400m/14-384).

  Only unscanned encoders (``encoderblock_0`` ...) and the image tower
  without a head (SigLIP's out_dim (None, E)) are supported.
  """
  weights = {k if k.startswith("params/") else f"params/{k}": v for k, v in weights.items()}
  r = _Reader(weights, "big_vision")
  if r.has("params/img/Transformer/encoderblock/LayerNorm_0/scale"):
    raise ValueError("the big_vision checkpoint has scanned encoder blocks "
                     "(encoderblock/...); re-save it with scan=False.")
  if r.has("params/img/head/kernel"):
    raise ValueError("the big_vision image tower has a head (params/img/head); only "
                     "SigLIP models whose image embedding is the MAP output are supported.")
  i, t = "params/img", "params/txt"
  emb = r(f"{i}/embedding/kernel", 4)
  dense, norm, mha = _bv_block(r, f"{i}/MAPHead_0")
  image = {"patch_embed": {"kernel": emb, "bias": r(f"{i}/embedding/bias", 1)},
           "pos_embed": r(f"{i}/pos_embedding", 3)[0],
           "encoder": _bv_encoder(r, weights, f"{i}/Transformer"),
           "ln_post": {"scale": r(f"{i}/Transformer/encoder_norm/scale", 1),
                       "bias": r(f"{i}/Transformer/encoder_norm/bias", 1)},
           "map_head": {"probe": r(f"{i}/MAPHead_0/probe", 3),
                        "attn": mha("MultiHeadDotProductAttention_0"), "ln": norm("LayerNorm_0"),
                        "mlp": {"fc1": dense("MlpBlock_0/Dense_0"),
                                "fc2": dense("MlpBlock_0/Dense_1")}}}
  tok = r(f"{t}/Embed_0/embedding", 2)
  text = {"token_embed": {"embedding": tok}, "pos_embed": r(f"{t}/pos_embedding", 3)[0],
          "encoder": _bv_encoder(r, weights, f"{t}/Encoder_0"),
          "ln_final": {"scale": r(f"{t}/Encoder_0/encoder_norm/scale", 1),
                       "bias": r(f"{t}/Encoder_0/encoder_norm/bias", 1)},
          "proj": {"kernel": r(f"{t}/head/kernel", 2), "bias": r(f"{t}/head/bias", 1)}}
  params = {"image_encoder": image, "text_encoder": text,
            "logit_scale": r("params/t").reshape(()), "logit_bias": r("params/b").reshape(())}
  r.check_all_used()
  v_block, t_block = image["encoder"]["block_0"], text["encoder"]["block_0"]
  width = emb.shape[3]
  arch = dict(
      family="siglip", embed_dim=int(width),
      image_size=image_size or int(round(image["pos_embed"].shape[0] ** 0.5)) * int(emb.shape[0]),
      patch_size=int(emb.shape[0]), vision_width=int(width),
      vision_layers=len(image["encoder"]),
      vision_heads=int(v_block["attn"]["query"]["kernel"].shape[1]),
      vision_mlp=int(v_block["mlp"]["fc1"]["kernel"].shape[1]),
      text_width=int(tok.shape[1]), text_layers=len(text["encoder"]),
      text_heads=int(t_block["attn"]["query"]["kernel"].shape[1]),
      text_mlp=int(t_block["mlp"]["fc1"]["kernel"].shape[1]), vocab_size=int(tok.shape[0]),
      context_length=int(text["pos_embed"].shape[0]), act="gelu_tanh", ln_eps=1e-6, pad_id=1,
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  return arch, params


def check_fits(params, model, what: str) -> None:
  """Raises ValueError (one sentence per problem, at most 8) unless `params`
  has exactly the names and shapes `model` initialises."""
  import jax  # pylint: disable=import-outside-toplevel
  a = model.arch
  fresh = jax.eval_shape(model.init, jax.random.key(0),
                         jax.ShapeDtypeStruct((1, a.image_size, a.image_size, 3), np.float32),
                         jax.ShapeDtypeStruct((1, 2), np.int32),
                         jax.ShapeDtypeStruct((1,), np.int32))["params"]
  want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(fresh)}
  have = {jax.tree_util.keystr(p): tuple(np.shape(x))
          for p, x in jax.tree_util.tree_leaves_with_path(params)}
  problems = [f"{k} is missing from {what}." for k in sorted(set(want) - set(have))]
  problems += [f"{k} in {what} is not a parameter of this model." for k in sorted(set(have) - set(want))]
  problems += [f"{k} in {what} has shape {have[k]}, the model expects {want[k]}."
               for k in sorted(set(want) & set(have)) if want[k] != have[k]]
  if problems:
    raise ValueError(" ".join(problems[:8]) + (f" ({len(problems) - 8} more.)"
                                               if len(problems) > 8 else ""))
