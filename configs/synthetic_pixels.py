"""Pixel demo: the tiny CLIP-style dual encoder trained from rendered images.

The synthetic scenes drawn as 64x64 pictures (itr_jax.data.synthetic_pixels;
generated into `data.data_dir` on first use, no download): the same captions,
RSC caption embeddings and graded ground truth as configs/synthetic_scenes.py,
but the image tower (a 2-block ViT, patch 8) reads pixels. CLIP's InfoNCE +
S-NDCG (loss.weight 0.5; from scratch the hardest-negative triplet alone
barely leaves chance in this budget, see configs/ablations/pairwise_pixels.py),
random resized crop (area 0.9-1) + horizontal flip (no caption speaks of left
or right, so flipped pictures stay true).

  python -m itr_jax.train --config=configs/synthetic_pixels.py --workdir=workdirs/pixels

Variants: `:siglip` (the SigLIP-style tiny towers and sigmoid loss),
`:triplet` (hardest-negative triplet + S-NDCG, the paper's pairwise term).
"""
from itr_jax.training import defaults


def get_config(variant: str = ""):
  c = defaults.base_config()
  c.data.name = "synthetic_pixels"
  c.data.data_dir = "data/synthetic_pixels"
  c.data.pixels_size = 64
  c.data.max_len = 24
  c.data.image.flip = True

  c.model.name = "siglip" if variant == "siglip" else "clip"
  c.loss.pairwise = {"siglip": "sigmoid", "triplet": "triplet"}.get(variant, "infonce")
  c.loss.weight = 0.5
  c.model.variant = "tiny"
  c.model.image_size = 64

  c.train.batch_size = 128
  c.train.num_epochs = 10
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 200
  c.optim.learning_rate = 1e-3
  c.optim.lr_update = 9
  c.eval.batch_size = 200
  if variant not in ("", "siglip", "triplet"):
    raise ValueError(f"unknown variant {variant!r}: use '', 'siglip' or 'triplet'")
  return c
