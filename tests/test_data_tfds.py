"""Tests for itr_jax.data.tfds_builder: records equal the precomputed source."""
import glob
import os
import shutil

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


# --- Reading the records for training and evaluation (tfds_source) ---------

import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import itertools  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position

from itr_jax.data import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.data import tfds_source  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.data import vocab as V  # pylint: disable=g-import-not-at-top,wrong-import-position

L = 12  # max_len


@pytest.fixture(scope="module")
def both(tmp_path_factory):
  """The same splits as .npy files and as ArrayRecords written by the CLI."""
  root = tmp_path_factory.mktemp("tfds_source")
  src, out = str(root / "src"), str(root / "tfds")
  write_random_split(src, "train", num_images=7, regions=3, feature_dim=4,
                     emb_dim=5, dtype=np.float16)
  write_random_split(src, "one", num_images=6, captions_per_image=1,
                     regions=2, feature_dim=3, emb_dim=0, seed=1)
  rel = np.random.default_rng(2).random((7, 35)).astype(np.float32)
  np.save(f"{src}/train_relevance.npy", rel)
  assert tfds_builder.convert(src, out).endswith("itr_precomputed/1.1.0")
  npy = {s: precomputed.load_split(src, s) for s in ("train", "one")}
  rec = {s: tfds_source.load_split("itr_precomputed", out, s)
         for s in ("train", "one")}
  return {"npy": npy, "tfds": rec, "src": src, "out": out,
          "vocab": V.Vocabulary.build(npy["train"].captions)}


def _batches(split, vocab, n, **kw):
  kw = {"batch_size": 8, "seed": 3, "max_len": L, "process_index": 0,
        "process_count": 1, **kw}
  return list(itertools.islice(pipeline.train_batches(split, vocab, **kw), n))


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      assert x[k].dtype == y[k].dtype, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("count", [1, 2])
def test_train_batches_bitwise_equal_npy_with_resume(both, count):
  vocab = both["vocab"]
  for p in range(count):
    kw = {"process_index": p, "process_count": count}
    npy = _batches(both["npy"]["train"], vocab, 6, **kw)  # 2 epochs (35 // 8 = 4)
    _assert_same(npy, _batches(both["tfds"]["train"], vocab, 6, **kw))
    # A run resumed at step 3 (mid-epoch) reads the same batches.
    _assert_same(npy[3:], _batches(both["tfds"]["train"], vocab, 3,
                                   start_step=3, **kw))


def test_split_views_equal_npy(both):
  for name in ("train", "one"):
    a, b = both["npy"][name], both["tfds"][name]
    assert (b.captions, b.captions_per_image) == (a.captions, a.captions_per_image)
    np.testing.assert_array_equal(np.asarray(b.images),
                                  np.asarray(a.images, np.float32))
    assert b.images[-1].shape == a.images[-1].shape
    np.testing.assert_array_equal(b.images[[4, 0, 4], 1],
                                  np.asarray(a.images[[4, 0, 4], 1], np.float32))
    assert (b.caption_emb is None) == (a.caption_emb is None)
  np.testing.assert_array_equal(np.asarray(both["tfds"]["train"].caption_emb),
                                both["npy"]["train"].caption_emb)
  np.testing.assert_array_equal(np.asarray(both["tfds"]["train"].true_relevance),
                                both["npy"]["train"].true_relevance)
  assert both["tfds"]["one"].true_relevance is None
  part = tfds_source.load_split("itr_precomputed", both["out"], "train",
                                max_images=2)
  full = precomputed.load_split(both["src"], "train", max_images=2)
  assert part.captions == full.captions and part.images.shape == (2, 3, 4)
  np.testing.assert_array_equal(np.asarray(part.true_relevance),
                                full.true_relevance)
  np.testing.assert_array_equal(np.asarray(part.caption_emb), full.caption_emb)


def test_eval_batches_bitwise_equal_npy(both):
  vocab = both["vocab"]
  for name in ("train", "one"):
    a, b = both["npy"][name], both["tfds"][name]
    _assert_same(list(pipeline.eval_image_batches(a, batch_size=4)),
                 list(pipeline.eval_image_batches(b, batch_size=4)))
    _assert_same(list(pipeline.eval_batches(a, vocab, batch_size=4, max_len=L)),
                 list(pipeline.eval_batches(b, vocab, batch_size=4, max_len=L)))


def test_each_process_reads_only_the_records_of_its_rows(both):
  reads = []

  class Counting:
    def __init__(self, source):
      self.source = source

    def __len__(self):
      return len(self.source)

    def __getitems__(self, ids):
      reads.append(list(ids))
      return self.source.__getitems__(ids)

  for p in range(2):
    split = tfds_source.load_split("itr_precomputed", both["out"], "train")
    records = split.images._records  # pylint: disable=protected-access
    records.source = Counting(records.source)
    reads.clear()
    [batch] = _batches(split, both["vocab"], 1, start_step=10**6, num_steps=1,
                       process_index=p, process_count=2)
    # Its 4 rows' images, each read once (then reused for the embeddings);
    # nothing for the skipped steps or the other process's rows.
    assert sorted(sum(reads, [])) == sorted(set(batch["image_ids"].tolist()))


def test_experiment_data_opens_tfds(both, tmp_path):
  from itr_jax.training import defaults, experiment_data, validation  # pylint: disable=g-import-not-at-top
  config = defaults.base_config()
  config.data.name, config.data.tfds_data_dir = "tfds", both["out"]
  config.data.train_split, config.data.dev_split = "train", "one"
  config.data.test_split, config.train.batch_size = "", 8
  validation.check_config(config)
  data = experiment_data.prepare(config, str(tmp_path / "w"))
  assert data.train.captions == both["npy"]["train"].captions
  # No vocab.json in the source folder: built from the records' captions.
  assert data.vocab.words == both["vocab"].words
  assert data.steps_per_epoch == 4
  config.data.caption_emb_path = "/x/{split}.npy"
  with pytest.raises(ValueError, match="caption_emb_path must be empty"):
    validation.check_config(config)


# ~15 s (a fresh interpreter importing TensorFlow); `convert`, which the
# command runs, is covered by the fixture above and the errors test below.
@pytest.mark.slow
def test_converter_command(both, tmp_path):
  def command(*flags):
    return subprocess.run(
        [sys.executable, "-m", "itr_jax.data.tfds_builder", *flags],
        capture_output=True, text=True, timeout=300)
  ok = command(f"--data_dir={both['src']}", f"--out={tmp_path}")
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert f"wrote {tmp_path}/itr_precomputed/1.1.0" in ok.stdout
  again = command(f"--data_dir={both['src']}", f"--out={tmp_path}")
  assert again.returncode == 1 and "already exists" in again.stderr
  assert "Traceback" not in again.stderr


def test_reader_and_converter_errors(both, tmp_path):
  with pytest.raises(ValueError, match=r"no prepared TFDS dataset.*tfds_builder"):
    tfds_source.load_split("itr_precomputed", str(tmp_path / "none"), "train")
  with pytest.raises(ValueError, match=r"has no split 'dev'.*\['one', 'train'\]"):
    tfds_source.load_split("itr_precomputed", both["out"], "dev")
  with pytest.raises(ValueError, match="already exists.*written once"):
    tfds_builder.convert(both["src"], both["out"])
  with pytest.raises(ValueError, match="holds no split"):
    tfds_builder.convert(str(tmp_path), str(tmp_path / "o"))
  with pytest.raises(ValueError, match="is not a folder"):
    tfds_builder.convert(str(tmp_path / "missing"), str(tmp_path / "o"))
  no_emb = tfds_source.load_split("itr_precomputed", both["out"], "one")
  assert no_emb.caption_emb is None
  with pytest.raises(ValueError, match="no caption embeddings"):
    tfds_source.load_split("itr_precomputed", both["out"], "one",
                           require_caption_emb=True)
  # Records in TFRecord format (TFDS's default) cannot be read by index.
  _prepare(both["src"], tmp_path / "tfrecord")
  with pytest.raises(ValueError, match="not in the ArrayRecord format"):
    tfds_source.load_split("itr_precomputed", str(tmp_path / "tfrecord"), "one")


def test_a_damaged_record_is_found_when_the_split_is_opened(both, tmp_path):
  """Before, a Riegeli traceback came at the first batch needing the record, or
  in the test evaluation after training finished."""
  out = str(tmp_path / "tfds")
  shutil.copytree(both["out"], out)
  [shard] = [p for p in glob.glob(os.path.join(out, "itr_precomputed", "1.1.0", "*train.array_record*"))
             if not p.endswith(".json")]
  data = bytearray(open(shard, "rb").read())
  used = [i for i, c in enumerate(data) if c]
  for k in used[len(used) // 2:len(used) // 2 + 30]:
    data[k] ^= 0xff
  open(shard, "wb").write(bytes(data))
  with pytest.raises(ValueError, match=r"split 'train' of .* has a damaged record among records"):
    tfds_source.load_split("itr_precomputed", out, "train")
