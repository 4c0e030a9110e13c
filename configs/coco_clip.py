"""COCO from images, CLIP B/16 fine-tuned (`defaults.dual_encoder_recipe`).

Prepare the images (docs/guides/images.md), import the published checkpoint
into a workdir, then fine-tune from it:

  python -m itr_jax.train --config=configs/coco_clip.py:infonce_sndcg \
      --config.data.data_dir=data/coco_images --config.data.image_root=/path/to/images \
      --config.train.init_from=workdirs/clip_b16_imported \
      --config.model.tokenizer=workdirs/clip_b16_imported/tokenizer --workdir=workdirs/coco_clip

Variants after the colon (loss.pairwise, S-NDCG weight): infonce, infonce_sndcg,
sigmoid, sigmoid_sndcg, triplet, triplet_sndcg, lit, lit_sndcg (locked image
tower). Sources of every number: `defaults.dual_encoder_recipe`.
"""
from itr_jax.training import defaults


def get_config(variant: str = "infonce_sndcg"):
  return defaults.dual_encoder_recipe("coco", "clip", variant)
