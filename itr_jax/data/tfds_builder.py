"""TFDS builder ``itr_precomputed``: a precomputed ITR dataset as TFRecords.

Reads the precomputed format (``precomputed.py``) from the TFDS ``manual_dir``
and writes one record per image, so a large dataset is validated and prepared
once. Every split found there (``{split}_ims.npy`` + ``{split}_caps.txt``) is
written under its own name. A record holds:

* ``image_id``: int32, the image index in its split;
* ``image``: float32 ``[R, F]`` region features;
* ``captions``: the image's C captions (text; C = 5 or 1);
* ``caption_ids``: int32 ``[C]``, their line indices in ``{split}_caps.txt``;
* ``caption_emb``: float32 ``[C, D]`` sentence embeddings (``[C, 0]`` when
  the split has none).

``{split}_relevance.npy`` is not stored (it is N_images x N_captions).

  import tensorflow_datasets as tfds
  from itr_jax.data import tfds_builder  # registers "itr_precomputed"
  builder = tfds.builder("itr_precomputed", data_dir="~/tensorflow_datasets")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir="/path/to/f30k_precomp", try_download_gcs=False))
  ds = builder.as_dataset(split="train")
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from itr_jax.data import precomputed


class ItrPrecomputed(tfds.core.GeneratorBasedBuilder):
  """Precomputed image-text retrieval data (SCAN / VSE++ / Listwise_ITR)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put a dataset in the precomputed format in `manual_dir`: per split,
  `{split}_ims.npy` [N_images, R, F], `{split}_caps.txt` (5 or 1 captions per
  image) and optionally `{split}_caps_emb.npy` [N_captions, D]. E.g. SCAN's
  `data/f30k_precomp`, or `python -m itr_jax.data.synthetic_scenes --out_dir`.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    # R, F, C and D differ between datasets: dynamic shapes, stored as bytes.
    return self.dataset_info_from_configs(
        description="Precomputed region features, captions and caption "
                    "embeddings for image-text retrieval.",
        features=tfds.features.FeaturesDict({
            "image_id": tfds.features.Scalar(dtype=np.int32),
            "image": tfds.features.Tensor(
                shape=(None, None), dtype=np.float32,
                encoding=tfds.features.Encoding.BYTES),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "caption_ids": tfds.features.Tensor(shape=(None,),
                                                dtype=np.int32),
            "caption_emb": tfds.features.Tensor(
                shape=(None, None), dtype=np.float32,
                encoding=tfds.features.Encoding.BYTES),
        }),
        supervised_keys=None,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    data_dir = str(dl_manager.manual_dir)
    splits = precomputed.available_splits(data_dir)
    if not splits:
      raise ValueError(f"no split (pair of {{split}}_ims.npy and "
                       f"{{split}}_caps.txt) in manual_dir {data_dir!r}")
    # Validate every split before writing anything.
    loaded = {s: precomputed.load_split(data_dir, s) for s in splits}
    return {s: self._generate_examples(split) for s, split in loaded.items()}

  def _generate_examples(self, split: precomputed.PrecomputedSplit):
    for i in range(split.num_images):
      ids = split.captions_of_image(i)
      emb = (np.zeros((len(ids), 0), np.float32) if split.caption_emb is None
             else np.asarray(split.caption_emb[ids], np.float32))
      yield i, {"image_id": i,
                "image": np.asarray(split.images[i], np.float32),
                "captions": [split.captions[c] for c in ids],
                "caption_ids": ids.astype(np.int32),
                "caption_emb": emb}
