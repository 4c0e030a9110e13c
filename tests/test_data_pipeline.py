"""Tests for itr_jax.data.pipeline: train order, resume, sharding, eval coverage."""
import dataclasses
import itertools

import numpy as np
import pytest

from itr_jax.data import pipeline
from itr_jax.data import precomputed
from itr_jax.data import vocab as V
from itr_jax.data.testing import write_random_split

L = 12  # max_len


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """30 captions of 6 images (5:1), and 7 captions of 7 images (1:1)."""
  d = str(tmp_path_factory.mktemp("pipe"))
  write_random_split(d, "five", num_images=6, regions=3, feature_dim=4,
                     emb_dim=5, dtype=np.float16)
  write_random_split(d, "one", num_images=7, captions_per_image=1, regions=2,
                     feature_dim=3, emb_dim=4, seed=1)
  write_random_split(d, "noemb", num_images=3, emb_dim=0, seed=2)
  five = precomputed.load_split(d, "five")
  vocab = V.Vocabulary.build(five.captions)
  return {"five": five, "one": precomputed.load_split(d, "one"),
          "noemb": precomputed.load_split(d, "noemb"), "vocab": vocab}


def _take(it, n):
  return list(itertools.islice(it, n))


def _train(data, name="five", **kw):
  kw = {"batch_size": 8, "seed": 0, "max_len": L, "process_index": 0,
        "process_count": 1, **kw}
  return pipeline.train_batches(data[name], data["vocab"], **kw)


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def _check_rows(split, vocab, batch, *, with_images=True):
  """Every row equals the source data of its caption id (float64 compare)."""
  for r, c in enumerate(batch["caption_ids"]):
    if not batch["mask"][r]:
      continue
    i = c // split.captions_per_image
    assert batch["image_ids"][r] == i
    ids, length = vocab.encode(split.captions[c], L)
    np.testing.assert_array_equal(batch["tokens"][r], ids)
    assert batch["lengths"][r] == length
    if split.caption_emb is not None:
      np.testing.assert_array_equal(batch["caption_emb"][r],
                                    split.caption_emb[c])
    if with_images:
      np.testing.assert_array_equal(batch["images"][r],
                                    np.asarray(split.images[i], np.float64))
      if split.caption_emb is not None:
        k = split.captions_per_image
        np.testing.assert_array_equal(batch["image_caption_emb"][r],
                                      split.caption_emb[i * k:(i + 1) * k])


def test_train_batch_shapes_dtypes_and_contents(data):
  batches = _take(_train(data), 4)
  b = batches[0]
  expected = {"images": ((8, 3, 4), np.float32), "tokens": ((8, L), np.int32),
              "lengths": ((8,), np.int32), "image_ids": ((8,), np.int32),
              "caption_ids": ((8,), np.int32),
              "image_caption_emb": ((8, 5, 5), np.float32),
              "caption_emb": ((8, 5), np.float32), "mask": ((8,), np.bool_)}
  assert {k: (v.shape, v.dtype) for k, v in b.items()} == expected
  for batch in batches:
    assert batch["mask"].all()
    _check_rows(data["five"], data["vocab"], batch)


def test_train_order_is_the_seeded_epoch_permutation(data):
  batches = _take(_train(data, seed=7), 7)  # 3 steps per epoch (30 // 8)
  assert pipeline.steps_per_epoch(data["five"], 8) == 3
  for step, batch in enumerate(batches):
    epoch, i = divmod(step, 3)
    perm = np.random.default_rng((7, epoch)).permutation(30)
    np.testing.assert_array_equal(batch["caption_ids"], perm[8 * i:8 * i + 8])
  # Same seed -> same batches; another epoch or seed -> another order.
  _assert_batches_equal(batches, _take(_train(data, seed=7), 7))
  epoch0 = np.concatenate([b["caption_ids"] for b in batches[:3]])
  epoch1 = np.concatenate([b["caption_ids"] for b in batches[3:6]])
  assert len(set(epoch0)) == 24  # no repeats within an epoch
  assert not np.array_equal(epoch0, epoch1)
  other = _take(_train(data, seed=8), 1)[0]["caption_ids"]
  assert not np.array_equal(other, batches[0]["caption_ids"])


def test_resume_from_step_matches_uninterrupted_run(data):
  full = _take(_train(data), 8)
  for start in (1, 3, 5):  # mid-epoch and on an epoch boundary
    _assert_batches_equal(_take(_train(data, start_step=start), 8 - start),
                          full[start:])


def test_skipped_steps_read_nothing(data):

  class CountingArray:
    """Array stand-in recording each read."""

    def __init__(self, array):
      self.array, self.shape, self.dtype = array, array.shape, array.dtype
      self.reads = []

    def __getitem__(self, index):
      self.reads.append(np.asarray(index).copy())
      return self.array[index]

  counting = CountingArray(data["five"].images)
  split = dataclasses.replace(data["five"], images=counting)
  batches = list(pipeline.train_batches(
      split, data["vocab"], batch_size=8, seed=0, max_len=L, start_step=10**6,
      num_steps=1, process_index=0, process_count=1))
  assert len(batches) == 1 and len(counting.reads) == 1
  # One read per batch: the batch's distinct images, in file order.
  expected = np.unique(batches[0]["caption_ids"] // 5)
  np.testing.assert_array_equal(counting.reads[0], expected)


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_partition_the_global_batch(data, count):
  full = _take(_train(data, batch_size=8), 4)
  shards = [_take(_train(data, batch_size=8, process_index=p,
                         process_count=count), 4) for p in range(count)]
  for step in range(4):
    for key in full[step]:
      np.testing.assert_array_equal(
          np.concatenate([shards[p][step][key] for p in range(count)]),
          full[step][key])
    assert shards[0][step]["images"].shape[0] == 8 // count


def test_process_defaults_come_from_jax(data):
  a = _take(pipeline.train_batches(data["five"], data["vocab"], batch_size=8,
                                   seed=0, max_len=L), 2)
  _assert_batches_equal(a, _take(_train(data), 2))


def test_one_caption_per_image_layout(data):
  split = data["one"]
  batches = _take(_train(data, "one", batch_size=3), 3)
  for b in batches:
    np.testing.assert_array_equal(b["image_ids"], b["caption_ids"])
    assert b["image_caption_emb"].shape == (3, 1, 4)
    _check_rows(split, data["vocab"], b)


def test_split_without_embeddings_has_no_embedding_keys(data):
  b = _take(_train(data, "noemb", batch_size=4), 1)[0]
  assert set(b) == {"images", "tokens", "lengths", "image_ids", "caption_ids",
                    "mask"}
  im = next(pipeline.eval_image_batches(data["noemb"], batch_size=2,
                                        process_index=0, process_count=1))
  assert set(im) == {"images", "image_ids", "mask"}


@pytest.mark.parametrize("name,batch_size", [("five", 8), ("five", 30),
                                             ("one", 4), ("five", 64)])
def test_eval_captions_cover_everything_once(data, name, batch_size):
  split = data[name]
  batches = list(pipeline.eval_batches(split, data["vocab"],
                                       batch_size=batch_size, max_len=L,
                                       process_index=0, process_count=1))
  assert len(batches) == -(-split.num_captions // batch_size)
  ids = np.concatenate([b["caption_ids"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(ids[mask], np.arange(split.num_captions))
  assert (ids[~mask] == -1).all() and mask[:split.num_captions].all()
  for b in batches:
    assert b["images"].shape[0] == batch_size  # static shapes, padded
    assert (b["image_ids"][~b["mask"]] == -1).all()
    assert (b["lengths"] >= 2).all()  # padding rows are real data, no zeros
    _check_rows(split, data["vocab"], b)


def test_eval_caption_batches_skip_images_by_default(data):
  b = next(pipeline.eval_caption_batches(data["five"], data["vocab"],
                                         batch_size=8, max_len=L,
                                         process_index=0, process_count=1))
  assert set(b) == {"tokens", "lengths", "image_ids", "caption_ids",
                    "caption_emb", "mask"}
  _check_rows(data["five"], data["vocab"], b, with_images=False)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_images_cover_each_image_once(data, process_count):
  split = data["five"]
  per_process = [list(pipeline.eval_image_batches(
      split, batch_size=4, process_index=p, process_count=process_count))
                 for p in range(process_count)]
  ids = np.concatenate([b["image_ids"] for bs in per_process for b in bs])
  mask = np.concatenate([b["mask"] for bs in per_process for b in bs])
  assert sorted(ids[mask]) == list(range(6)) and (ids[~mask] == -1).all()
  for bs in per_process:
    assert len(bs) == 2  # ceil(6 / 4) global batches
    for b in bs:
      for r in np.flatnonzero(b["mask"]):
        i = b["image_ids"][r]
        np.testing.assert_array_equal(b["images"][r], split.images[i])
        np.testing.assert_array_equal(b["image_caption_emb"][r],
                                      split.caption_emb[5 * i:5 * i + 5])


def test_train_caption_ids_reference():
  np.testing.assert_array_equal(
      pipeline.train_caption_ids(10, batch_size=4, seed=1, step=3),
      np.random.default_rng((1, 1)).permutation(10)[4:8])


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=31), "exceeds"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=8, process_count=3), "divisible"),
    (dict(process_index=2, process_count=2), "process_index"),
    (dict(max_len=2), "max_len"),
    (dict(seed=-1), "seed"),
    (dict(start_step=-1), "start_step"),
])
def test_bad_arguments(data, kw, match):
  with pytest.raises(ValueError, match=match):
    _train(data, **kw)


def test_count_truncated_counts_captions_longer_than_max_len():
  captions = ["a", "a dog", "a red dog .", "two red dogs and a cat"]  # 3, 4, 6, 8 tokens
  vocab = V.Vocabulary.build(captions[:2])  # unknown words count as tokens too
  assert [pipeline.count_truncated(vocab, captions, n) for n in (3, 4, 5, 6, 7, 8)] == [
      3, 2, 2, 1, 1, 0]
  _, lengths = vocab.encode_batch(captions, 5)
  assert lengths.tolist() == [3, 4, 5, 5]  # what encode_batch cuts


def test_keeping_the_last_partial_batch_visits_every_caption_once(data):
  # 30 captions, batch 8: steps of 8, 8, 8, then the 6 leftovers (official).
  assert pipeline.steps_per_epoch(data["five"], 8, drop_last=False) == 4
  assert pipeline.steps_per_epoch(data["five"], 10, drop_last=False) == 3  # no remainder
  batches = _take(_train(data, seed=3, drop_last=False), 9)
  assert [len(b["caption_ids"]) for b in batches] == [8, 8, 8, 6] * 2 + [8]
  for epoch in range(2):
    perm = np.random.default_rng((3, epoch)).permutation(30)
    ids = np.concatenate([b["caption_ids"] for b in batches[4 * epoch:4 * epoch + 4]])
    np.testing.assert_array_equal(ids, perm)  # the whole permutation, in order
  for b in batches:
    _check_rows(data["five"], data["vocab"], b)
  # Resuming anywhere (mid-epoch, at and after the partial batch) is exact.
  for start in (2, 3, 4, 7):
    _assert_batches_equal(_take(_train(data, seed=3, drop_last=False, start_step=start),
                                9 - start), batches[start:])


@pytest.mark.parametrize("count", [2, 4])
def test_partial_batch_is_topped_up_to_the_shards_and_split_over_processes(data, count):
  # 6 leftovers; over 4 shards the last batch takes 8: + the epoch's first 2.
  full = _take(_train(data, seed=3, drop_last=False, batch_multiple=4), 4)
  perm = np.random.default_rng((3, 0)).permutation(30)
  np.testing.assert_array_equal(full[3]["caption_ids"], np.r_[perm[24:], perm[:2]])
  shards = [_take(_train(data, seed=3, drop_last=False, batch_multiple=4,
                         process_index=p, process_count=count), 4) for p in range(count)]
  for step in range(4):
    for key in full[step]:
      np.testing.assert_array_equal(
          np.concatenate([shards[p][step][key] for p in range(count)]), full[step][key])
  with pytest.raises(ValueError, match="divisible by process_count=4"):
    _train(data, drop_last=False, process_index=0, process_count=4)  # 6 rows over 4


def test_last_batch_size_and_drop_last_checks(data):
  assert pipeline.last_batch_size(30, 8) == 6
  assert pipeline.last_batch_size(30, 8, batch_multiple=8) == 8
  assert pipeline.last_batch_size(25, 8) == 2  # a ranking needs 2 pairs
  assert pipeline.last_batch_size(32, 8, batch_multiple=8) == 0
  with pytest.raises(ValueError, match="drop_last"):
    pipeline.steps_per_epoch(data["five"], 8, drop_last="no")


def test_without_tensorflow_a_thread_pool_gives_the_same_batches(data, monkeypatch):
  """The TensorFlow-free input path (tests/test_tf_free.py runs it without TF
  installed) yields the tf.data pipeline's batches, dtypes included."""
  def every_kind():
    return [_take(_train(data, seed=3, drop_last=False, start_step=2), 7),
            list(pipeline.eval_caption_batches(data["five"], data["vocab"], batch_size=7,
                                               max_len=L, with_images=True)),
            list(pipeline.eval_image_batches(data["one"], batch_size=3))]

  with_tf = every_kind()
  monkeypatch.setattr(pipeline, "_tensorflow", lambda: None)
  without = every_kind()
  for a, b in zip(with_tf, without):
    _assert_batches_equal(a, b)
    assert [{k: v.dtype for k, v in x.items()} for x in a] == [
        {k: v.dtype for k, v in x.items()} for x in b]
  forever = _train(data)
  assert isinstance(forever, pipeline._ClosableIterator) and len(_take(forever, 9)) == 9
  forever.close()  # stops the pool; the iterator then ends
  assert next(forever, None) is None
