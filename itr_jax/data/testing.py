"""Tiny random datasets in the precomputed format, for tests.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> arrays = write_random_split(d, "train", num_images=3)
>>> arrays["images"].shape, len(arrays["captions"]), arrays["caption_emb"].shape
((3, 2, 4), 15, (15, 6))
"""
from __future__ import annotations

import os

import numpy as np

_WORDS = ("a", "dog", "cat", "red", "blue", "car", "on", "next", "to", "the",
          "ball", "small", "big", "is", "there")


def write_random_split(data_dir: str, split: str, *, num_images: int,
                       captions_per_image: int = 5, regions: int = 2,
                       feature_dim: int = 4, emb_dim: int = 6, seed: int = 0,
                       dtype=np.float32) -> dict:
  """Writes ``{split}_ims.npy``, ``{split}_caps.txt`` and (if ``emb_dim``)
  ``{split}_caps_emb.npy`` of random content; returns what was written.

  Caption ``c`` starts with "image {c // C} caption {c}" so order is visible.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(data_dir, exist_ok=True)
  n_caps = num_images * captions_per_image
  images = rng.standard_normal((num_images, regions, feature_dim)).astype(dtype)
  captions = [
      f"image {c // captions_per_image} caption {c} " +
      " ".join(rng.choice(_WORDS, int(rng.integers(1, 6))))
      for c in range(n_caps)]
  np.save(os.path.join(data_dir, f"{split}_ims.npy"), images)
  with open(os.path.join(data_dir, f"{split}_caps.txt"), "w",
            encoding="utf-8") as f:
    f.write("\n".join(captions) + "\n")
  out = {"images": images, "captions": captions, "caption_emb": None}
  if emb_dim:
    emb = rng.standard_normal((n_caps, emb_dim)).astype(np.float32)
    np.save(os.path.join(data_dir, f"{split}_caps_emb.npy"), emb)
    out["caption_emb"] = emb
  return out
