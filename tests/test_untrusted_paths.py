"""Names taken from data or patterns stay inside their folder; staging cleans up.

Unit level and cheap: the examples page's thumbnail lookup, the staging
cache's mapping of object names and its temporaries (the network is faked;
the end-to-end staging test against a GCS emulator is in test_gcs_paths.py).
"""
import os

import pytest
from PIL import Image

from itr_jax.data import staging
from itr_jax.report import examples


@pytest.mark.parametrize("image_id", ["ABSOLUTE", "../outside", "a/../../outside",
                                      "link/outside", "~/outside"])
def test_image_ids_cannot_embed_files_outside_the_image_folder(tmp_path, image_id):
  images, outside = tmp_path / "images", tmp_path / "outside"
  images.mkdir()
  (images / "a").mkdir()
  Image.new("RGB", (8, 8)).save(outside, format="PNG")  # readable, if it were looked up
  os.symlink(tmp_path, images / "link")  # a symlink out of the folder
  image_id = str(outside) if image_id == "ABSOLUTE" else image_id
  thumbs = examples.image_thumbnails(str(images), "{id}", [image_id], [0])
  assert "is outside the image folder" in thumbs[0] and "base64" not in thumbs[0]


def test_image_ids_inside_the_folder_still_get_thumbnails(tmp_path):
  (tmp_path / "sub").mkdir()
  Image.new("RGB", (8, 8)).save(tmp_path / "sub" / "7.png")
  thumbs = examples.image_thumbnails(str(tmp_path), "sub/{id}.png", [7], [0])
  assert "base64" in thumbs[0]


@pytest.mark.parametrize("pattern", ["{id.__class__}", "{id[0]}", "{id!r}", "{0}", "{}",
                                     "{id:{row}}", "{name}.jpg", "{id"])
def test_the_image_pattern_allows_only_the_documented_fields(pattern):
  with pytest.raises(ValueError, match="--image_pattern"):
    examples.check_image_pattern(pattern)


@pytest.mark.parametrize("url", ["gs://bucket/../../etc/x", "gs://bucket/a/./b", "gs://b//x",
                                 "gs://../x"])
def test_object_names_cannot_map_outside_the_staging_cache(tmp_path, url):
  with pytest.raises(ValueError, match="outside the staging cache"):
    staging.local_path(url, str(tmp_path))


def test_staging_removes_the_temporary_file_of_a_killed_download(tmp_path, monkeypatch):
  url, cache = "gs://bucket/data/train_ims.npy", str(tmp_path / "cache")
  dst = staging.local_path(url, cache)
  os.makedirs(os.path.dirname(dst))
  killed = f"{dst}.tmp-4242"  # left by a download killed mid-copy
  with open(killed, "wb") as f:
    f.write(b"\0" * 1000)

  def download(_, state, tmp):
    with open(tmp, "wb") as f:
      f.write(b"abc")

  monkeypatch.setattr(staging, "_source_state", lambda u: {"size": 3, "generation": 1})
  monkeypatch.setattr(staging, "_download", download)
  assert staging.stage(url, cache) == dst and open(dst, "rb").read() == b"abc"
  assert not os.path.exists(killed)
  assert sorted(os.listdir(os.path.dirname(dst))) == [
      "train_ims.npy", "train_ims.npy.lock", "train_ims.npy.staged.json"]
