"""Tests for itr_jax.data.precomputed: loading and up-front validation."""
import json
import os

import numpy as np
import pytest

from itr_jax.data import precomputed
from itr_jax.data.testing import write_random_split


@pytest.mark.parametrize("per_image", [5, 1])
def test_load_layouts(tmp_path, per_image):
  src = write_random_split(str(tmp_path), "train", num_images=4,
                           captions_per_image=per_image, regions=3,
                           feature_dim=5, emb_dim=7)
  s = precomputed.load_split(str(tmp_path), "train")
  assert s.captions_per_image == per_image
  assert (s.num_images, s.num_captions) == (4, 4 * per_image)
  assert (s.num_regions, s.feature_dim, s.emb_dim) == (3, 5, 7)
  assert isinstance(s.images, np.memmap)  # never loaded whole
  np.testing.assert_array_equal(s.images, src["images"])
  np.testing.assert_array_equal(s.caption_emb, src["caption_emb"])
  assert s.captions == src["captions"]
  assert s.true_relevance is None
  np.testing.assert_array_equal(s.image_of_caption(np.arange(4 * per_image)),
                                np.arange(4 * per_image) // per_image)
  np.testing.assert_array_equal(
      s.captions_of_image(np.array([0, 3])),
      [list(range(0, per_image)), list(range(3 * per_image, 4 * per_image))])


def test_no_embeddings_is_fine_unless_required(tmp_path):
  write_random_split(str(tmp_path), "dev", num_images=2, emb_dim=0)
  assert precomputed.load_split(str(tmp_path), "dev").caption_emb is None
  with pytest.raises(ValueError, match="no caption embeddings.*embed_captions.*text_features"):
    precomputed.load_split(str(tmp_path), "dev", require_caption_emb=True)


def test_explicit_embedding_path(tmp_path):
  write_random_split(str(tmp_path), "dev", num_images=2, emb_dim=0)
  path = str(tmp_path / "other.npy")
  # Rows must vary (constant rows are refused: their cosine is undefined).
  np.save(path, np.arange(30, dtype=np.float32).reshape(10, 3))
  s = precomputed.load_split(str(tmp_path), "dev", caption_emb_path=path)
  assert s.emb_dim == 3
  with pytest.raises(ValueError, match="missing caption embedding file"):
    precomputed.load_split(str(tmp_path), "dev",
                           caption_emb_path=str(tmp_path / "absent.npy"))


def test_float16_features_accepted(tmp_path):
  write_random_split(str(tmp_path), "dev", num_images=2, dtype=np.float16)
  assert precomputed.load_split(str(tmp_path), "dev").images.dtype == np.float16


def test_max_images_truncates_consistently(tmp_path):
  src = write_random_split(str(tmp_path), "dev", num_images=5)
  rel = np.random.default_rng(0).random((5, 25)).astype(np.float32)
  np.save(tmp_path / "dev_relevance.npy", rel)
  s = precomputed.load_split(str(tmp_path), "dev", max_images=2)
  assert (s.num_images, s.num_captions) == (2, 10)
  assert s.captions == src["captions"][:10]
  np.testing.assert_array_equal(s.caption_emb, src["caption_emb"][:10])
  np.testing.assert_array_equal(s.true_relevance, rel[:2, :10])
  assert precomputed.load_split(str(tmp_path), "dev",
                                max_images=0).num_images == 5


def test_missing_files_are_named_with_listing(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=2)
  write_random_split(str(tmp_path), "dev", num_images=2)
  with pytest.raises(ValueError, match=r"'test_ims.npy'.*has the splits \['dev', 'train'\]"):
    precomputed.load_split(str(tmp_path), "test")
  os.remove(tmp_path / "dev_caps.txt")
  os.remove(tmp_path / "train_caps.txt")
  with pytest.raises(ValueError, match=r"'train_caps.txt'.*train_ims.npy"):
    precomputed.load_split(str(tmp_path), "train")
  with pytest.raises(ValueError, match="does not exist"):
    precomputed.load_split(str(tmp_path / "nowhere"), "train")


def test_unreadable_npy(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=2)
  (tmp_path / "train_ims.npy").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="cannot read image features"):
    precomputed.load_split(str(tmp_path), "train")


@pytest.mark.parametrize("array,match", [
    (np.zeros((2, 3), np.float32), "rank 3"),
    (np.zeros((2, 3, 4), np.int32), "must hold floats"),
    (np.zeros((2, 0, 4), np.float32), "empty dimension"),
])
def test_bad_feature_arrays(tmp_path, array, match):
  write_random_split(str(tmp_path), "train", num_images=2)
  np.save(tmp_path / "train_ims.npy", array)
  with pytest.raises(ValueError, match=match):
    precomputed.load_split(str(tmp_path), "train")


def test_caption_count_mismatch_explains_layouts(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=3, emb_dim=0)
  with open(tmp_path / "train_caps.txt", "a") as f:
    f.write("one caption too many\n")
  with pytest.raises(ValueError, match=r"3 images and 16 captions.*15 "
                     r"captions.*3 captions"):
    precomputed.load_split(str(tmp_path), "train")


def test_empty_caption_line_number(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=1, emb_dim=0)
  lines = (tmp_path / "train_caps.txt").read_text().splitlines()
  lines[3] = "   "
  (tmp_path / "train_caps.txt").write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match="line 4 is an empty caption"):
    precomputed.load_split(str(tmp_path), "train")


def test_embedding_count_mismatch_says_what_to_run(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=2)
  np.save(tmp_path / "train_caps_emb.npy", np.zeros((9, 4), np.float32))
  with pytest.raises(ValueError, match=r"9 rows.*10 captions.*"
                     r"itr_jax.data.text_features"):
    precomputed.load_split(str(tmp_path), "train")
  np.save(tmp_path / "train_caps_emb.npy", np.zeros((10,), np.float32))
  with pytest.raises(ValueError, match="rank 2"):
    precomputed.load_split(str(tmp_path), "train")


def test_relevance_shape_checked(tmp_path):
  write_random_split(str(tmp_path), "dev", num_images=2)
  np.save(tmp_path / "dev_relevance.npy", np.zeros((10, 2), np.float32))
  with pytest.raises(ValueError, match=r"expected \[N_images, N_captions\]"):
    precomputed.load_split(str(tmp_path), "dev")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_found_in_later_chunk(tmp_path, monkeypatch, bad):
  src = write_random_split(str(tmp_path), "train", num_images=7)
  images = src["images"].copy()
  images[5, 1, 2] = bad
  np.save(tmp_path / "train_ims.npy", images)
  # One image per chunk: the bad row must be found across chunk boundaries.
  monkeypatch.setattr(precomputed, "_CHECK_CHUNK_BYTES", images[0].nbytes)
  with pytest.raises(ValueError, match=r"train_ims.npy.*NaN or Inf.*row 5"):
    precomputed.load_split(str(tmp_path), "train")
  # The check can be skipped (e.g. when the data was validated before).
  precomputed.load_split(str(tmp_path), "train", check_values=False)


def test_non_finite_embeddings(tmp_path):
  src = write_random_split(str(tmp_path), "train", num_images=2)
  emb = src["caption_emb"].copy()
  emb[7, 0] = np.nan
  np.save(tmp_path / "train_caps_emb.npy", emb)
  with pytest.raises(ValueError, match=r"train_caps_emb.npy.*row 7"):
    precomputed.load_split(str(tmp_path), "train")


def test_available_splits(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=1)
  write_random_split(str(tmp_path), "test", num_images=1)
  np.save(tmp_path / "dev_ims.npy", np.zeros((1, 1, 1), np.float32))  # no caps
  assert precomputed.available_splits(str(tmp_path)) == ["test", "train"]
  assert precomputed.available_splits(str(tmp_path), ["train", "dev"]) == [
      "train"]


class _FakeEncoder:
  """Stands in for SentenceEncoder in embed_captions_file (no model needed)."""
  name, weights_sha256, tokenizer_settings, dim = "fake", "0" * 64, {}, 3

  def encode(self, texts, batch_size):
    del batch_size
    return np.array([[len(t), t.count(" "), 1.0] for t in texts], np.float32)


def _embed(data_dir, split):
  from itr_jax.tools.embed_captions import embed_captions_file  # pylint: disable=import-outside-toplevel
  return embed_captions_file(os.path.join(data_dir, f"{split}_caps.txt"),
                             encoder=_FakeEncoder(), progress=False)


def test_matching_sidecar_loads(tmp_path):
  src = write_random_split(str(tmp_path), "train", num_images=2, emb_dim=0)
  _embed(str(tmp_path), "train")
  assert (tmp_path / "train_caps_emb.json").is_file()
  s = precomputed.load_split(str(tmp_path), "train", require_caption_emb=True)
  np.testing.assert_array_equal(
      s.caption_emb[:, 0], [len(c) for c in src["captions"]])


def test_captions_edited_after_embedding_say_what_to_run(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=2, emb_dim=0)
  _embed(str(tmp_path), "train")
  lines = (tmp_path / "train_caps.txt").read_text().splitlines()
  lines[4] = "a different caption, same count"
  (tmp_path / "train_caps.txt").write_text("\n".join(lines) + "\n")
  command = (f"python -m itr_jax.tools.embed_captions --data_dir={tmp_path} "
             "--split=train --overwrite")
  with pytest.raises(ValueError, match=r"different train_caps.txt \(sha256 "
                     r"mismatch\)") as e:
    precomputed.load_split(str(tmp_path), "train")
  assert command in str(e.value)
  # Fewer captions (a whole image removed): the count is named too.
  (tmp_path / "train_caps.txt").write_text("\n".join(lines[:5]) + "\n")
  np.save(tmp_path / "train_ims.npy", np.zeros((1, 2, 4), np.float32))
  with pytest.raises(ValueError, match=r"10 rows.*5 captions") as e:
    precomputed.load_split(str(tmp_path), "train")
  assert command in str(e.value)


def test_count_mismatch_without_sidecar_names_the_command(tmp_path):
  write_random_split(str(tmp_path), "train", num_images=2)
  np.save(tmp_path / "train_caps_emb.npy", np.zeros((9, 4), np.float32))
  with pytest.raises(ValueError) as e:
    precomputed.load_split(str(tmp_path), "train")
  assert (f"python -m itr_jax.tools.embed_captions --data_dir={tmp_path} "
          "--split=train --overwrite`") in str(e.value)
  # An explicit path elsewhere is passed on as --out.
  other = str(tmp_path / "elsewhere.npy")
  np.save(other, np.zeros((9, 4), np.float32))
  with pytest.raises(ValueError, match=rf"--split=train --out={other} "
                     "--overwrite`"):
    precomputed.load_split(str(tmp_path), "train", caption_emb_path=other)


def _inject_nan(path, row, keep_mtime):
  """Writes a NaN into `row` in place; optionally restores the mtime."""
  st = os.stat(path)
  array = np.load(path, mmap_mode="r+")
  array[row] = np.nan
  array.flush()
  del array
  if keep_mtime:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
  else:
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_value_check_runs_once_and_again_when_the_file_changes(tmp_path):
  from itr_jax.data import check_record  # pylint: disable=g-import-not-at-top
  # 96 x 8 x 1024 float32 = 3 MiB: the middle rows are not fingerprinted.
  write_random_split(str(tmp_path), "train", num_images=96, regions=8,
                     feature_dim=1024, emb_dim=4)
  ims = str(tmp_path / "train_ims.npy")
  precomputed.load_split(str(tmp_path), "train")
  with open(check_record.record_path(ims)) as f:
    assert json.load(f)["passed"] == ["finite"]
  with open(check_record.record_path(str(tmp_path / "train_caps_emb.npy"))) as f:
    assert json.load(f)["passed"] == ["embedding_rows", "finite"]
  # Same size, mtime and first/last MiB: the record is trusted, no scan
  # (the NaN goes unseen; that is what the record buys).
  _inject_nan(ims, 48, keep_mtime=True)
  precomputed.load_split(str(tmp_path), "train")
  # Any change of mtime (or size, or the fingerprinted ends): scanned again.
  _inject_nan(ims, 48, keep_mtime=False)
  with pytest.raises(ValueError, match="NaN or Inf values \\(first in row 48\\)"):
    precomputed.load_split(str(tmp_path), "train")
  # A NaN in the first or last MiB changes the fingerprint even with the
  # same mtime; a part-file check (max_images) never writes a record.
  write_random_split(str(tmp_path / "b"), "train", num_images=96, regions=8,
                     feature_dim=1024, emb_dim=4)
  ims = str(tmp_path / "b" / "train_ims.npy")
  precomputed.load_split(str(tmp_path / "b"), "train", max_images=10)
  assert not os.path.exists(check_record.record_path(ims))
  precomputed.load_split(str(tmp_path / "b"), "train")
  _inject_nan(ims, 95, keep_mtime=True)
  with pytest.raises(ValueError, match="first in row 95"):
    precomputed.load_split(str(tmp_path / "b"), "train")


def test_value_check_without_a_writable_folder_runs_every_time(
    tmp_path, monkeypatch, caplog):
  from itr_jax.data import check_record  # pylint: disable=g-import-not-at-top

  def read_only(*args, **kwargs):
    raise OSError("Read-only file system")

  monkeypatch.setattr(check_record.fs, "atomic_write_text", read_only)
  write_random_split(str(tmp_path), "train", num_images=96, regions=8,
                     feature_dim=1024, emb_dim=0)
  ims = str(tmp_path / "train_ims.npy")
  precomputed.load_split(str(tmp_path), "train")  # never fails for that
  assert "runs again at every start" in caplog.text
  assert sorted(os.listdir(tmp_path)) == ["train_caps.txt", "train_ims.npy"]
  _inject_nan(ims, 48, keep_mtime=True)
  with pytest.raises(ValueError, match="first in row 48"):
    precomputed.load_split(str(tmp_path), "train")
