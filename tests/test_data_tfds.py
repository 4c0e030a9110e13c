"""Tests for itr_jax.data.tfds_builder: records equal the precomputed source."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from itr_jax.data import precomputed
from itr_jax.data import tfds_builder  # pylint: disable=unused-import  (registers)
from itr_jax.data.testing import write_random_split


def _prepare(manual_dir, data_dir):
  builder = tfds.builder("itr_precomputed", data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), try_download_gcs=False))
  return builder


def test_records_equal_source(tmp_path):
  src = tmp_path / "src"
  write_random_split(str(src), "train", num_images=3, regions=2,
                     feature_dim=3, emb_dim=4)
  write_random_split(str(src), "test", num_images=2, captions_per_image=1,
                     regions=2, feature_dim=3, emb_dim=0, seed=1)
  builder = _prepare(src, tmp_path / "tfds")
  assert set(builder.info.splits) == {"train", "test"}
  for name in ("train", "test"):
    split = precomputed.load_split(str(src), name)
    records = sorted(tfds.as_numpy(builder.as_dataset(split=name)),
                     key=lambda r: r["image_id"])
    assert [r["image_id"] for r in records] == list(range(split.num_images))
    for i, r in enumerate(records):
      ids = split.captions_of_image(i)
      np.testing.assert_array_equal(r["image"], split.images[i])
      np.testing.assert_array_equal(r["caption_ids"], ids)
      assert [c.decode() for c in r["captions"]] == [split.captions[c]
                                                     for c in ids]
      if split.caption_emb is None:
        assert r["caption_emb"].shape == (1, 0)
      else:
        np.testing.assert_array_equal(r["caption_emb"], split.caption_emb[ids])


def test_invalid_source_fails_before_writing(tmp_path):
  src = tmp_path / "src"
  write_random_split(str(src), "train", num_images=2)
  (src / "train_caps.txt").write_text("only one caption\n")
  with pytest.raises(ValueError, match="2 images and 1 captions"):
    _prepare(src, tmp_path / "tfds")
