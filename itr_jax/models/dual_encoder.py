r"""CLIP and SigLIP dual encoders: a ViT image tower and a Transformer text tower.

One implementation for both families; `DualEncoderConfig.family` picks the
published architecture's details:

======================  ==========================  ==========================
                        "clip"                      "siglip"
======================  ==========================  ==========================
patch embedding         conv, no bias               conv + bias
image pooling           class token, ln_pre/ln_post  all tokens, ln_post, MAP head
image projection        linear, no bias             none (embed_dim = width)
text attention          causal                      full (no padding mask)
text pooling            EOT token (position len-1)  last position (context_length-1)
text projection         linear, no bias             linear + bias ("head")
logit scale / bias      log(1/0.07) / none          log(10) / -10
======================  ==========================  ==========================

Both towers end in unit-norm float32 embeddings; a pair's score is their dot
product (the two-tower fast path). The learnable temperature lives in the
params as ``logit_scale`` (:math:`\log t`; scaled logits
:math:`e^{\log t}\,\cos + b`) and, for SigLIP, ``logit_bias`` (:math:`b`);
`logit_params` returns them for the pairwise losses.

Inputs: images float32 [B, S, S, 3] already normalised with the tower's
mean/std (`image_preprocessing`); captions as token ids [B, L] + lengths [B]
(L <= context_length). SigLIP tokens at positions >= length are replaced by
the pad id and the sequence padded to `context_length` in the model, so the
pooled "last" position is the reference one however a batch was padded.

>>> import jax, jax.numpy as jnp, ml_collections
>>> model = create_model(ml_collections.ConfigDict(dict(name="siglip", variant="tiny", vocab_size=50)))
>>> images = jnp.zeros((2, 32, 32, 3)); tokens = jnp.ones((2, 5), jnp.int32)
>>> variables = model.init(jax.random.key(0), images, tokens, jnp.array([5, 3]))
>>> img, cap = model.apply(variables, images, tokens, jnp.array([5, 3]))
>>> (img @ cap.T).shape, sorted(logit_params(variables["params"]))
((2, 2), ['logit_bias', 'logit_scale'])
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from itr_jax.data.image_preprocessing import CLIP_MEAN, CLIP_STD
from itr_jax.models import initializers
from itr_jax.models import vse
from itr_jax.models.normalize import l2_normalize
from itr_jax.models.text_encoder import check_caption_batch
from itr_jax.models.transformer import ACTIVATIONS, Attention, Encoder, Mlp

Dtype = Any
FAMILIES = ("clip", "siglip")


@dataclasses.dataclass(frozen=True)
class DualEncoderConfig:
  """Architecture of one dual encoder (a published variant or imported weights)."""
  family: str
  embed_dim: int
  image_size: int
  patch_size: int
  vision_width: int
  vision_layers: int
  vision_heads: int
  vision_mlp: int
  text_width: int
  text_layers: int
  text_heads: int
  text_mlp: int
  vocab_size: int
  context_length: int
  act: str
  ln_eps: float
  pad_id: int = 0
  mean: tuple = CLIP_MEAN
  std: tuple = CLIP_STD

  def check(self) -> "DualEncoderConfig":
    if self.family not in FAMILIES:
      raise ValueError(f"model.name must be one of {FAMILIES}, got {self.family!r}.")
    if self.act not in ACTIVATIONS:
      raise ValueError(f"model.arch.act must be one of {sorted(ACTIVATIONS)}, got {self.act!r}.")
    if self.image_size < self.patch_size:
      raise ValueError(f"model.image_size {self.image_size} is smaller than the patch "
                       f"size {self.patch_size}.")
    if self.vocab_size <= 0:
      raise ValueError("model.vocab_size must be set for the 'tiny' variant (the "
                       "data vocabulary's size, filled in at run time).")
    if self.family == "siglip" and self.embed_dim != self.vision_width:
      raise ValueError(f"SigLIP has no image projection: embed_dim ({self.embed_dim}) "
                       f"must equal vision_width ({self.vision_width}).")
    return self


def _clip(embed, patch, v_width, v_layers, v_heads, t_width, t_heads, image=224,
          act="quick_gelu"):
  return dict(family="clip", embed_dim=embed, image_size=image, patch_size=patch,
              vision_width=v_width, vision_layers=v_layers, vision_heads=v_heads,
              vision_mlp=4 * v_width, text_width=t_width, text_layers=12,
              text_heads=t_heads, text_mlp=4 * t_width, vocab_size=49408,
              context_length=77, act=act, ln_eps=1e-5, mean=CLIP_MEAN, std=CLIP_STD)


def _siglip(width, layers, heads, mlp, patch, image):
  return dict(family="siglip", embed_dim=width, image_size=image, patch_size=patch,
              vision_width=width, vision_layers=layers, vision_heads=heads,
              vision_mlp=mlp, text_width=width, text_layers=layers, text_heads=heads,
              text_mlp=mlp, vocab_size=32000, context_length=64, act="gelu_tanh",
              ln_eps=1e-6, pad_id=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def _tiny(family):
  base = _clip(32, 8, 32, 2, 2, 32, 2) if family == "clip" else _siglip(32, 2, 2, 64, 8, 32)
  return {**base, "text_layers": 2, "vision_mlp": 64, "text_mlp": 64, "image_size": 32,
          "context_length": 64, "vocab_size": 0, "pad_id": 0}


# (family, variant) -> architecture. CLIP: OpenAI's ViT-B/32, B/16, L/14 (open_clip
# "ViT-B-32" etc. with QuickGELU); SigLIP: big_vision's B/16 (224) and So400m/14 (384).
VARIANTS = {
    ("clip", "B/32"): _clip(512, 32, 768, 12, 12, 512, 8),
    ("clip", "B/16"): _clip(512, 16, 768, 12, 12, 512, 8),
    ("clip", "L/14"): _clip(768, 14, 1024, 24, 16, 768, 12),
    ("clip", "tiny"): _tiny("clip"),
    ("siglip", "B/16"): _siglip(768, 12, 12, 3072, 16, 224),
    ("siglip", "So400m/14"): _siglip(1152, 27, 16, 4304, 14, 384),
    ("siglip", "tiny"): _tiny("siglip"),
}
# config.model fields the dual encoders read.
MODEL_FIELDS = ("variant", "arch", "image_size", "vocab_size", "remat", "dtype",
                "param_dtype", "tokenizer", "lit")


def architecture(model_config: ml_collections.ConfigDict) -> DualEncoderConfig:
  """The `DualEncoderConfig` that `config.model` names.

  `model.variant` picks a row of `VARIANTS`; `model.image_size` (0: the
  variant's) and `model.arch` (a dict of `DualEncoderConfig` fields, written
  by the checkpoint importers) override it; `model.vocab_size` is used by the
  "tiny" variant only (published variants have their tokenizer's).

  >>> cfg = ml_collections.ConfigDict(dict(name="clip", variant="L/14"))
  >>> a = architecture(cfg); a.vision_layers, a.patch_size, a.embed_dim
  (24, 14, 768)
  """
  family = model_config.get("name", "clip")
  variant = model_config.get("variant", "") or "tiny"
  if (family, variant) not in VARIANTS:
    known = sorted(v for f, v in VARIANTS if f == family)
    raise ValueError(f"config.model.variant={variant!r} is not a {family} variant; "
                     f"choose one of {known}.")
  fields = dict(VARIANTS[(family, variant)])
  if variant == "tiny":
    fields["vocab_size"] = int(model_config.get("vocab_size", 0) or 0)
  if model_config.get("image_size", 0):
    fields["image_size"] = int(model_config.image_size)
  arch = dict(model_config.get("arch", None) or {})
  unknown = sorted(set(arch) - {f.name for f in dataclasses.fields(DualEncoderConfig)})
  if unknown:
    raise ValueError(f"Unknown config.model.arch field(s) {unknown}; known: "
                     f"{[f.name for f in dataclasses.fields(DualEncoderConfig)]}.")
  fields.update(arch)
  fields["mean"], fields["std"] = tuple(fields["mean"]), tuple(fields["std"])
  return DualEncoderConfig(**fields).check()


def image_preprocessing(model_config: ml_collections.ConfigDict):
  """(image_size, mean, std) the image tower of `config.model` expects.

  Patches tile the image from its top-left corner; a remainder (384 = 27 x 14
  + 6 for So400m/14) is dropped, as the reference convolution does. Pixels
  in [0, 1] are normalised as (x - mean) / std per RGB channel.

  >>> image_preprocessing(ml_collections.ConfigDict(dict(name="siglip", variant="B/16")))
  (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
  """
  a = architecture(model_config)
  return a.image_size, a.mean, a.std


def logit_params(params) -> dict:
  """{"logit_scale": log t} (+ "logit_bias": b for SigLIP) of a model's params."""
  return {k: params[k] for k in ("logit_scale", "logit_bias") if k in params}


class ImageTower(nn.Module):
  """Images [B, S, S, 3] -> embeddings [B, E] (not normalised)."""
  arch: DualEncoderConfig
  remat: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    a, clip = self.arch, self.arch.family == "clip"
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if images.ndim != 4 or images.shape[1:] != (a.image_size, a.image_size, 3):
      raise ValueError(f"images must be [batch, {a.image_size}, {a.image_size}, 3], "
                       f"got shape {images.shape}.")
    x = nn.Conv(a.vision_width, (a.patch_size,) * 2, strides=(a.patch_size,) * 2,
                padding="VALID", use_bias=not clip, name="patch_embed", **kw)(images)
    x = x.reshape(x.shape[0], -1, a.vision_width)
    init = initializers.scaled_normal(0.02)
    if clip:
      cls = self.param("cls", init, (a.vision_width,), self.param_dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, a.vision_width)), x], 1)
    x = x + self.param("pos_embed", init, x.shape[1:], self.param_dtype).astype(x.dtype)
    norm = lambda name: nn.LayerNorm(a.ln_eps, name=name, **kw)
    if clip:
      x = norm("ln_pre")(x)
    x = Encoder(a.vision_layers, a.vision_heads, a.vision_mlp, a.act, ln_eps=a.ln_eps,
                remat=self.remat, name="encoder", **kw)(x)
    if clip:
      x = norm("ln_post")(x[:, 0])
      return nn.Dense(a.embed_dim, use_bias=False, name="proj", **kw)(x)
    return MapHead(a, name="map_head", **kw)(norm("ln_post")(x))


class MapHead(nn.Module):
  """Multihead attention pooling: a learned probe attends over the tokens."""
  arch: DualEncoderConfig
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    a, kw = self.arch, dict(dtype=self.dtype, param_dtype=self.param_dtype)
    probe = self.param("probe", nn.initializers.xavier_uniform(), (1, 1, x.shape[-1]),
                       self.param_dtype)
    probe = jnp.broadcast_to(probe.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    x = Attention(a.vision_heads, name="attn", **kw)(probe, x)
    y = nn.LayerNorm(a.ln_eps, name="ln", **kw)(x)
    return (x + Mlp(a.vision_mlp, a.act, name="mlp", **kw)(y))[:, 0]


class TextTower(nn.Module):
  """Token ids [B, L] + lengths [B] -> embeddings [B, E] (not normalised)."""
  arch: DualEncoderConfig
  remat: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, lengths):
    a, clip = self.arch, self.arch.family == "clip"
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    check_caption_batch(tokens, lengths, "token ids")
    if tokens.shape[1] > a.context_length:
      raise ValueError(f"captions of {tokens.shape[1]} tokens exceed the text tower's "
                       f"context length {a.context_length}; truncate them in the tokenizer.")
    if not clip:
      # Reference SigLIP pools the last of context_length positions: pad to it.
      valid = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
      tokens = jnp.where(valid, tokens, a.pad_id)
      tokens = jnp.pad(tokens, ((0, 0), (0, a.context_length - tokens.shape[1])),
                       constant_values=a.pad_id)
    x = nn.Embed(a.vocab_size, a.text_width, embedding_init=initializers.scaled_normal(0.02),
                 name="token_embed", **kw)(tokens)
    pos = self.param("pos_embed", initializers.scaled_normal(0.01),
                     (a.context_length, a.text_width), self.param_dtype)
    x = x + pos[:tokens.shape[1]].astype(x.dtype)
    x = Encoder(a.text_layers, a.text_heads, a.text_mlp, a.act, causal=clip,
                ln_eps=a.ln_eps, remat=self.remat, name="encoder", **kw)(x)
    x = nn.LayerNorm(a.ln_eps, name="ln_final", **kw)(x)
    if clip:  # the EOT token ends each caption
      x = jnp.take_along_axis(x, (lengths - 1)[:, None, None], axis=1)[:, 0]
    else:
      x = x[:, -1]
    return nn.Dense(a.embed_dim, use_bias=not clip, name="proj", **kw)(x)


class DualEncoder(nn.Module):
  """CLIP / SigLIP two-tower scorer (see the module docstring).

  Methods (`model.apply(variables, ..., method=...)`): `encode_images(images)
  -> [B, E]`, `encode_texts(tokens, lengths) -> [B, E]` (unit norm, float32),
  `__call__(images, tokens, lengths) -> (img_emb, cap_emb)`. Parameters:
  ``image_encoder/...``, ``text_encoder/...``, ``logit_scale`` and (SigLIP)
  ``logit_bias``.

  `locked_image` (LiT): the image tower is frozen and run once per image
  outside training (`itr_jax.training.lit`); `encode_images` then takes
  those cached embeddings [B, E] and the model has no image parameters, so a
  step runs only the text tower and the loss.
  """
  arch: DualEncoderConfig
  remat: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  locked_image: bool = False
  two_tower = True

  def setup(self):
    kw = dict(remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
    if not self.locked_image:
      self.image_encoder = ImageTower(self.arch, **kw)
    self.text_encoder = TextTower(self.arch, **kw)
    clip = self.arch.family == "clip"
    scale = math.log(1 / 0.07) if clip else math.log(10.0)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(scale), (),
                                  jnp.float32)
    if not clip:
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(-10.0), (),
                                   jnp.float32)

  @property
  def image_shape(self):
    """Shape `(S, S, 3)` of the images `encode_images` takes ((E,) embeddings with `locked_image`)."""
    if self.locked_image:
      return (self.arch.embed_dim,)
    return (self.arch.image_size, self.arch.image_size, 3)

  @property
  def context_length(self):
    return self.arch.context_length

  def encode_images(self, images, region_mask=None, train: bool = False):
    del region_mask, train  # whole images, no dropout; the scorer interface's arguments
    if self.locked_image:
      if images.ndim != 2 or images.shape[1] != self.arch.embed_dim:
        raise ValueError(f"a locked image tower (LiT) takes cached image embeddings "
                         f"[batch, {self.arch.embed_dim}], got shape {images.shape}.")
      return l2_normalize(images)
    return l2_normalize(self.image_encoder(images))

  def encode_texts(self, tokens, lengths, train: bool = False):
    del train
    return l2_normalize(self.text_encoder(tokens, lengths))

  def __call__(self, images, tokens, lengths, region_mask=None, train: bool = False):
    del train
    return self.encode_images(images, region_mask), self.encode_texts(tokens, lengths)


def create_model(model_config: ml_collections.ConfigDict) -> DualEncoder:
  """The dual encoder of `config.model` (name "clip" | "siglip", variant, remat, dtype).

  >>> m = create_model(ml_collections.ConfigDict(dict(name="clip", variant="B/16", remat=True)))
  >>> m.arch.vision_width, m.remat
  (768, True)
  """
  return DualEncoder(architecture(model_config), remat=bool(model_config.get("remat", False)),
                     locked_image=bool(model_config.get("lit", False)),
                     dtype=vse.parse_dtype(model_config.get("dtype", ""), "dtype"),
                     param_dtype=vse.parse_dtype(model_config.get("param_dtype", ""), "param_dtype") or jnp.float32)
