r"""Image preprocessing for the dual encoders, in TensorFlow ops (tf.data).

Decode, crop, resize, normalise: the transforms of open_clip
(``open_clip/transform.py``, ``image_transform``) expressed with
``tf.image`` so they run inside a parallel ``tf.data`` map, outside the GIL.

* Evaluation: resize the shorter side to ``size`` (bicubic, antialiased),
  center crop ``size x size``.
* Training, ``crop="random_resized"`` (open_clip's fine-tuning default,
  ``AugmentationCfg(scale=(0.9, 1.0))``): torchvision's RandomResizedCrop —
  a box of area ``U(scale) * H * W`` and aspect ratio ``exp(U(log ratio))``
  (first of 10 draws that fits, else the whole image clamped to the ratio
  range, centred), resized to ``size x size``; then an optional horizontal
  flip (``flip``; open_clip has none by default). ``crop="center"``: the
  evaluation transform (no augmentation).
* Normalise: ``(x / 255 - mean) / std`` per channel, the tower's own
  statistics.

Randomness is stateless: every image's crop and flip are a function of its
``seed`` (``int64[2]``), so a resumed run, or a run on more processes,
draws the same crops.

>>> p = ImagePreprocessing(size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
>>> png = tf.io.encode_png(tf.fill([6, 10, 3], tf.constant(255, tf.uint8)))
>>> x = preprocess(png, tf.constant([0, 1], tf.int64), p, train=True)
>>> x.shape, float(tf.reduce_min(x)), float(tf.reduce_max(x))
(TensorShape([8, 8, 3]), 1.0, 1.0)
"""
from __future__ import annotations

import dataclasses
import math

from itr_jax import optional


class _TensorFlow:
  """TensorFlow, imported on first use: the dataclass below (and the
  precomputed-feature path that imports this module) need no TensorFlow."""

  def __getattr__(self, name):
    return getattr(optional.require("tensorflow", "Decoding raw images",
                                    "tensorflow-cpu"), name)


tf = _TensorFlow()

# OpenAI CLIP's pixel statistics (open_clip.constants.OPENAI_DATASET_MEAN/STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CROPS = ("random_resized", "center")
_TRIES = 10  # torchvision RandomResizedCrop.get_params


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
  """How images become ``float32[size, size, 3]`` model inputs.

  Attributes:
    size: output side in pixels (the tower's image size).
    mean, std: per-channel statistics of [0, 1] pixels (the tower's own).
    crop: training crop, "random_resized" or "center" (= evaluation).
    scale: area fraction range of the random crop.
    ratio: aspect-ratio (w / h) range of the random crop.
    flip: random horizontal flip in training.
  """
  size: int = 224
  mean: tuple[float, float, float] = CLIP_MEAN
  std: tuple[float, float, float] = CLIP_STD
  crop: str = "random_resized"
  scale: tuple[float, float] = (0.9, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip: bool = False

  def __post_init__(self):
    if self.size < 1:
      raise ValueError(f"image size must be >= 1, got {self.size}")
    if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
      raise ValueError(f"mean and std need 3 channels and std > 0, got "
                       f"mean={self.mean}, std={self.std}")
    if self.crop not in CROPS:
      raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
    if not 0 < self.scale[0] <= self.scale[1] <= 1:
      raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
    if not 0 < self.ratio[0] <= self.ratio[1]:
      raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")


def decode(encoded: tf.Tensor) -> tf.Tensor:
  """``uint8[H, W, 3]`` from PNG/JPEG/GIF/BMP bytes (grey and RGBA become RGB)."""
  return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _resize(image: tf.Tensor, height, width) -> tf.Tensor:
  image = tf.image.resize(tf.cast(image, tf.float32), tf.stack([height, width]),
                          method="bicubic", antialias=True)
  return tf.clip_by_value(image, 0.0, 255.0)  # as PIL's uint8 result


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """Shorter side resized to `size`, then the central ``size x size``."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = size / tf.reduce_min(shape)
  # torchvision rounds the longer side down (int()), never below `size`.
  h = tf.maximum(tf.cast(tf.math.floor(shape[0] * scale), tf.int32), size)
  w = tf.maximum(tf.cast(tf.math.floor(shape[1] * scale), tf.int32), size)
  image = _resize(image, h, w)
  # torchvision's CenterCrop offset: round((H - size) / 2).
  top = tf.cast(tf.round(tf.cast(h - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(w - size, tf.float32) / 2), tf.int32)
  return image[top:top + size, left:left + size]


def random_resized_crop_box(height, width, seed, scale, ratio):
  """(top, left, h, w) of torchvision's RandomResizedCrop, stateless.

  Ten (area, log-ratio) draws at once; the first whose box fits is used,
  else the whole image clamped to the ratio range, centred.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  area = tf.cast(height * width, tf.float32)
  u = tf.random.stateless_uniform([_TRIES, 2], seeds[0])
  target = area * (scale[0] + u[:, 0] * (scale[1] - scale[0]))
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = tf.exp(log_lo + u[:, 1] * (log_hi - log_lo))
  ws = tf.cast(tf.round(tf.sqrt(target * aspect)), tf.int32)
  hs = tf.cast(tf.round(tf.sqrt(target / aspect)), tf.int32)
  fits = (ws > 0) & (hs > 0) & (ws <= width) & (hs <= height)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  # Fallback: torchvision's clamp of the image's own ratio.
  in_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
  fb_w = tf.where(in_ratio < ratio[0], width, tf.where(
      in_ratio > ratio[1],
      tf.cast(tf.round(tf.cast(height, tf.float32) * ratio[1]), tf.int32), width))
  fb_h = tf.where(in_ratio < ratio[0],
                  tf.cast(tf.round(tf.cast(width, tf.float32) / ratio[0]), tf.int32),
                  height)
  found = tf.reduce_any(fits)
  h = tf.where(found, hs[first], fb_h)
  w = tf.where(found, ws[first], fb_w)
  v = tf.random.stateless_uniform([2], seeds[1])
  top = tf.where(found, tf.cast(tf.floor(v[0] * tf.cast(height - h + 1, tf.float32)),
                                tf.int32), (height - h) // 2)
  left = tf.where(found, tf.cast(tf.floor(v[1] * tf.cast(width - w + 1, tf.float32)),
                                 tf.int32), (width - w) // 2)
  return tf.minimum(top, height - h), tf.minimum(left, width - w), h, w


def preprocess(encoded: tf.Tensor, seed: tf.Tensor, options: ImagePreprocessing,
               *, train: bool) -> tf.Tensor:
  """``float32[size, size, 3]``: decoded, cropped, resized, normalised.

  Args:
    encoded: scalar string, the image file's bytes.
    seed: ``int64[2]`` stateless seed of this image's augmentation (unused
      when not training or with ``crop="center"`` and no flip).
    options: the transform.
    train: the training transform (else evaluation).
  """
  image = decode(encoded)
  size = options.size
  if train and options.crop == "random_resized":
    shape = tf.shape(image)
    top, left, h, w = random_resized_crop_box(
        shape[0], shape[1], tf.random.experimental.stateless_fold_in(seed, 0),
        options.scale, options.ratio)
    image = _resize(image[top:top + h, left:left + w], size, size)
  else:
    image = center_crop(image, size)
  if train and options.flip:
    coin = tf.random.stateless_uniform(
        [], tf.random.experimental.stateless_fold_in(seed, 1))
    image = tf.cond(coin < 0.5, lambda: tf.reverse(image, [1]), lambda: image)
  mean = tf.constant(options.mean, tf.float32) * 255.0
  std = tf.constant(options.std, tf.float32) * 255.0
  return tf.ensure_shape((image - mean) / std, [size, size, 3])


def preprocess_batch(encoded: tf.Tensor, seeds: tf.Tensor,
                     options: ImagePreprocessing, *, train: bool) -> tf.Tensor:
  """`preprocess` of each row: ``string[b]``, ``int64[b, 2]`` ->
  ``float32[b, size, size, 3]`` (rows decoded in parallel)."""
  size = options.size
  return tf.map_fn(lambda args: preprocess(args[0], args[1], options, train=train),
                   (encoded, seeds),
                   fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
                   parallel_iterations=16)
