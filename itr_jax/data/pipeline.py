"""tf.data input pipelines over a ``PrecomputedSplit``: train and eval batches.

Every batch is a dict of NumPy arrays with a leading batch dimension ``b``
(the per-process batch), static shapes throughout:

=====================  ===========  =========================================
key                    shape/dtype  meaning
=====================  ===========  =========================================
``images``             f32[b,R,F]   region features of the caption's image;
                                    f32[b,S,S,3] pixels for raw images
``tokens``             i32[b,L]     ``<start> words <end> <pad>...``, L=max_len
                                    (``[CLS] pieces [SEP] 0...`` with WordPiece)
``lengths``            i32[b]       true token count incl. <start>/<end>
``image_ids``          i32[b]       image index in the split (-1: padding)
``caption_ids``        i32[b]       caption index in the split (-1: padding)
``image_caption_emb``  f32[b,C,D]   sentence embeddings of the image's C captions
``caption_emb``        f32[b,D]     sentence embedding of the caption
``mask``               bool[b]      False on eval padding rows (train: all True)
=====================  ===========  =========================================

The two embedding keys are present only when the split has caption
embeddings. Image batches (``eval_image_batches``) hold ``images``,
``image_ids``, ``image_caption_emb`` and ``mask``; caption batches
(``eval_caption_batches``) hold everything but ``images`` and
``image_caption_emb`` unless ``with_images=True``.

Training order is a pure function of (seed, epoch): epoch ``e`` visits the
captions in the order ``np.random.default_rng((seed, e)).permutation(N)``, in
``N // batch_size`` full batches; with ``drop_last`` (the default) the
remainder is dropped, otherwise it forms one more, smaller batch (as the
official loader's last partial batch; see `last_batch_size`). Step ``s`` is
batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``, so a run
resumed at step ``s`` sees exactly the batches of an uninterrupted run, and
skipped steps read nothing. With P processes, ``batch_size`` is the global
batch and process p gets its rows ``[p*b/P, (p+1)*b/P)`` of each batch of b.

A split of raw images (``images`` an `image_sources.ImageSource`, with its
`image_preprocessing.ImagePreprocessing` attached) is read as encoded bytes
and decoded, cropped, resized and normalised by a second parallel tf.data
map: the training transform for train batches, with each row's random crop
drawn from the stateless seed (seed, step * batch_size + global row), so a
resumed run and any process count see the same pixels; the evaluation
transform (resize + center crop) otherwise.

Batches are assembled by a parallel, order-preserving ``tf.data`` map: each
step's caption indices are computed first, then the whole batch's features
are gathered from the memmap in one fancy-indexing read (unique images, in
file order) and prefetched. Without TensorFlow installed, a thread pool
runs the same map: the batches are identical.

>>> import tempfile
>>> from itr_jax.data import synthetic_scenes, precomputed, vocab as V
>>> d = synthetic_scenes.generate(tempfile.mkdtemp() + "/s", num_train=8,
...     num_dev=2, num_test=0, regions=4, feature_dim=8, emb_dim=6,
...     caption_encoder="tfidf")
>>> split = precomputed.load_split(d, "train")
>>> batch = next(train_batches(split, V.Vocabulary.load(d + "/vocab.json"),
...                            batch_size=4, seed=0, max_len=16))
>>> {k: v.shape for k, v in sorted(batch.items())}  # doctest: +NORMALIZE_WHITESPACE
{'caption_emb': (4, 6), 'caption_ids': (4,), 'image_caption_emb': (4, 5, 6),
 'image_ids': (4,), 'images': (4, 4, 8), 'lengths': (4,), 'mask': (4,),
 'tokens': (4, 16)}
"""
from __future__ import annotations

import atexit
import collections
import concurrent.futures
import functools
import gc
import itertools
import weakref
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from itr_jax import optional
from itr_jax.data import image_preprocessing
from itr_jax.data import image_sources
from itr_jax.data.precomputed import PrecomputedSplit
from itr_jax.data.vocab import Vocabulary

Batch = dict[str, np.ndarray]


class Tokenizer(Protocol):
  """What tokenises captions: the word `Vocabulary` (GRU text tower) or a
  `wordpiece_vocab.WordPieceVocabulary` (BERT text tower)."""

  def encode_batch(self, texts: Sequence[str],
                   max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(``int32[N, max_len]`` ids, ``int32[N]`` lengths)."""

@functools.cache
def _tensorflow():
  """TensorFlow, kept off any GPU, or None when it is not installed."""
  if not optional.available("tensorflow"):
    return None
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # tf.data only runs host-side input code here: keep TensorFlow off any GPU
  # so it cannot claim accelerator memory that JAX needs.
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # devices already initialised by the caller
    pass
  return tf


def _steps(num_captions: int, batch_size: int, drop_last: bool) -> int:
  full = num_captions // batch_size
  return full if drop_last or num_captions % batch_size == 0 else full + 1


def steps_per_epoch(split: PrecomputedSplit, batch_size: int, *,
                    drop_last: bool = True) -> int:
  """(Global) batches per epoch: ``N_captions // batch_size``, plus one for
  the remainder when ``drop_last`` is False and it is not empty."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if not isinstance(drop_last, bool):
    raise ValueError(f"drop_last must be True or False, got {drop_last!r}")
  if split.num_captions // batch_size == 0:
    raise ValueError(f"batch_size={batch_size} exceeds the {split.num_captions} "
                     f"captions of split {split.split!r}; use a smaller batch")
  return _steps(split.num_captions, batch_size, drop_last)


def last_batch_size(num_captions: int, batch_size: int, batch_multiple: int = 1) -> int:
  """Size of an epoch's last, partial batch when it is kept (0: none).

  The r = N mod batch_size leftover captions, topped up with the epoch's
  first captions to a multiple of ``batch_multiple`` (the batch shards: every
  device needs the same number of rows) and to at least 2 pairs (a ranking
  needs a negative). On one device and r >= 2 it is exactly the official
  loader's last batch.

  >>> last_batch_size(10, 4), last_batch_size(10, 4, batch_multiple=4), last_batch_size(9, 4)
  (2, 4, 2)
  """
  rest = num_captions % batch_size
  if rest == 0:
    return 0
  return max(-(-rest // batch_multiple) * batch_multiple, 2)


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_captions: int, seed: int, epoch: int) -> np.ndarray:
  perm = np.random.default_rng((seed, epoch)).permutation(num_captions)
  perm.flags.writeable = False
  return perm


def train_caption_ids(num_captions: int, *, batch_size: int, seed: int,
                      step: int, drop_last: bool = True,
                      batch_multiple: int = 1) -> np.ndarray:
  """Caption indices ``int64[b]`` of global training step ``step``.

  b = batch_size, except for the last batch of an epoch when ``drop_last`` is
  False and ``num_captions`` is not a multiple of ``batch_size``: then b =
  `last_batch_size` (the leftover captions, then the epoch's first ones).

  >>> train_caption_ids(10, batch_size=4, seed=0, step=2).shape
  (4,)
  >>> train_caption_ids(10, batch_size=4, seed=0, step=2, drop_last=False).shape
  (2,)
  """
  if seed < 0 or step < 0:
    raise ValueError(f"seed and step must be >= 0, got seed={seed}, "
                     f"step={step}")
  full = num_captions // batch_size
  if full == 0:
    raise ValueError(f"batch_size={batch_size} exceeds num_captions="
                     f"{num_captions}")
  epoch, i = divmod(step, _steps(num_captions, batch_size, drop_last))
  perm = _epoch_permutation(num_captions, seed, epoch)
  if i < full:
    return perm[i * batch_size:(i + 1) * batch_size]
  rest = perm[full * batch_size:]
  size = last_batch_size(num_captions, batch_size, batch_multiple)
  return np.concatenate([rest, perm[:size - len(rest)]])


def _process_slice(batch_size: int, process_index: int | None,
                   process_count: int | None) -> slice:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in "
                     f"[0, process_count={process_count})")
  if batch_size % process_count:
    raise ValueError(f"the global batch_size={batch_size} must be divisible by "
                     f"process_count={process_count}")
  per = batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def _gather(array: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """``float32(array[ids])``, reading each needed row once, in file order."""
  unique, inverse = np.unique(ids, return_inverse=True)
  return np.asarray(array[unique], dtype=np.float32)[inverse.reshape(ids.shape)]


class _Assembler:
  """Builds batches of a split from caption or image indices.

  For a split of raw images (an `image_sources.ImageSource`), the NumPy step
  reads each image's encoded bytes (``image_bytes``) and its augmentation
  seed (``image_seeds``); `finish` decodes them into ``images`` in tf.data.
  """

  def __init__(self, split: PrecomputedSplit, vocab: Tokenizer | None,
               max_len: int | None):
    self.split = split
    self.has_emb = split.caption_emb is not None
    self.pixels = image_sources.is_image_source(split.images)
    if self.pixels and split.images.preprocessing is None:
      raise ValueError(f"split {split.split!r} holds raw images but no "
                       "preprocessing (size, mean, std) was attached to it")
    if vocab is not None:
      # Tokenised once up front; batches then just index these arrays.
      self.tokens, self.lengths = vocab.encode_batch(split.captions, max_len)

  def _images(self, image_ids: np.ndarray, seeds: np.ndarray | None) -> Batch:
    if not self.pixels:
      return {"images": _gather(self.split.images, image_ids)}
    unique, inverse = np.unique(image_ids, return_inverse=True)
    encoded = np.empty(len(unique), dtype=object)
    encoded[:] = [self.split.images.read(int(i)) for i in unique]
    if seeds is None:  # evaluation: no randomness
      seeds = np.zeros((len(image_ids), 2), np.int64)
    return {"image_bytes": encoded[inverse.reshape(-1)],
            "image_seeds": seeds.astype(np.int64)}

  def captions(self, caption_ids: np.ndarray, mask: np.ndarray,
               with_images: bool, seeds: np.ndarray | None = None) -> Batch:
    split = self.split
    image_ids = split.image_of_caption(caption_ids)
    batch = {"tokens": self.tokens[caption_ids],
             "lengths": self.lengths[caption_ids],
             "image_ids": np.where(mask, image_ids, -1).astype(np.int32),
             "caption_ids": np.where(mask, caption_ids, -1).astype(np.int32),
             "mask": mask}
    if with_images:
      batch.update(self._images(image_ids, seeds))
    if self.has_emb:
      batch["caption_emb"] = _gather(split.caption_emb, caption_ids)
      if with_images:
        batch["image_caption_emb"] = _gather(
            split.caption_emb, split.captions_of_image(image_ids))
    return batch

  def images(self, image_ids: np.ndarray, mask: np.ndarray) -> Batch:
    split = self.split
    batch = {**self._images(image_ids, None),
             "image_ids": np.where(mask, image_ids, -1).astype(np.int32),
             "mask": mask}
    if self.has_emb:
      batch["image_caption_emb"] = _gather(
          split.caption_emb, split.captions_of_image(image_ids))
    return batch

  def signature(self, b: int, keys: list[str], max_len: int | None):
    s = self.split
    c, d = s.captions_per_image, s.emb_dim
    specs = {"tokens": ((b, max_len), np.int32),
             "lengths": ((b,), np.int32),
             "image_ids": ((b,), np.int32),
             "caption_ids": ((b,), np.int32),
             "image_caption_emb": ((b, c, d), np.float32),
             "caption_emb": ((b, d), np.float32),
             "mask": ((b,), np.bool_)}
    if self.pixels:
      specs["image_bytes"] = ((b,), np.object_)  # tf.string
      specs["image_seeds"] = ((b, 2), np.int64)
      keys = [k for key in keys for k in (
          ("image_bytes", "image_seeds") if key == "images" else (key,))]
    else:
      # Region features [R, F], or one embedding [E] per image (LiT).
      specs["images"] = ((b, *s.image_input_shape), np.float32)
    return {k: specs[k] for k in keys}

  def finish(self, train: bool) -> Callable[[dict], dict] | None:
    """The tf.data map that decodes ``image_bytes`` into ``images``."""
    if not self.pixels:
      return None
    options = self.split.images.preprocessing

    def fn(batch):
      if "image_bytes" not in batch:  # caption batches
        return batch
      batch = dict(batch)
      batch["images"] = image_preprocessing.preprocess_batch(
          batch.pop("image_bytes"), batch.pop("image_seeds"), options,
          train=train)
      return batch
    return fn


def _dataset(steps, make: Callable[[int], Batch], spec: dict, prefetch: int,
             finish: Callable[[dict], dict] | None = None):
  """Maps step numbers to batches with ``make`` (order-preserving, parallel),
  then with the TensorFlow map ``finish`` if any (image decoding)."""
  tf = _tensorflow()
  keys = list(spec)

  def py_fn(step):
    batch = make(int(step))
    return [batch[k] for k in keys]

  def tf_fn(step):
    values = tf.numpy_function(py_fn, [step],
                               [tf.as_dtype(spec[k][1]) for k in keys],
                               stateful=False)
    return {k: tf.ensure_shape(v, spec[k][0]) for k, v in zip(keys, values)}

  options = tf.data.Options()
  options.deterministic = True
  dataset = steps.map(tf_fn, num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True)
  if finish is not None:
    dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  return dataset.prefetch(prefetch).with_options(options)


def _threaded_batches(start: int, stop: int | None, make: Callable[[int], Batch],
                      spec: dict, prefetch: int) -> Iterator[Batch]:
  """`_dataset` without TensorFlow: ``make(step)`` for steps ``[start, stop)``
  (forever if stop is None), in order, on a thread pool that keeps
  ``prefetch + 1`` batches in flight."""
  steps = itertools.count(start) if stop is None else iter(range(start, stop))
  ahead = max(prefetch, 0) + 1
  pool = concurrent.futures.ThreadPoolExecutor(ahead, "itr_jax_input")
  pending = collections.deque()
  try:
    for step in itertools.islice(steps, ahead):
      pending.append(pool.submit(make, step))
    while pending:
      batch = pending.popleft().result()
      for step in itertools.islice(steps, 1):
        pending.append(pool.submit(make, step))
      yield {k: np.asarray(batch[k], dtype) for k, (_, dtype) in spec.items()}
  finally:
    pool.shutdown(wait=True, cancel_futures=True)


def _batches(start: int, stop: int | None, make: Callable[[int], Batch],
             spec: dict, prefetch: int,
             finish: Callable[[dict], dict] | None = None) -> "_ClosableIterator":
  """Batches ``make(step)`` for steps ``[start, stop)`` (stop None: forever):
  a tf.data pipeline, or `_threaded_batches` without TensorFlow (which cannot
  run ``finish``, the image decoding of raw-image datasets)."""
  tf = _tensorflow()
  if tf is None:
    if finish is not None:
      optional.require("tensorflow", "Decoding raw images", "tensorflow-cpu")
    return _ClosableIterator(_threaded_batches(start, stop, make, spec, prefetch))
  steps = (tf.data.Dataset.counter(start) if stop is None else
           tf.data.Dataset.range(start, stop))
  return _ClosableIterator(
      _dataset(steps, make, spec, prefetch, finish).as_numpy_iterator())


def _check_max_len(max_len):
  if max_len is None or max_len < 3:
    raise ValueError(f"max_len must be an int >= 3, got {max_len}")


def count_truncated(tokenizer: Tokenizer, captions: Sequence[str],
                    max_len: int) -> int:
  """How many `captions` have more than ``max_len`` tokens (incl. the start and
  end tokens), i.e. are cut by ``encode_batch(captions, max_len)``.

  >>> from itr_jax.data.vocab import Vocabulary
  >>> v = Vocabulary.build(["a b c"])
  >>> count_truncated(v, ["a", "a b c", "a b c a b c"], max_len=5)  # 3, 5, 8 tokens
  1
  """
  _check_max_len(max_len)
  _, lengths = tokenizer.encode_batch(captions, max_len + 1)
  return int(np.count_nonzero(lengths > max_len))


def longest_caption(tokenizer: Tokenizer, captions: Sequence[str], *,
                    guess: int = 32) -> int:
  """Tokens (incl. the start and end tokens) of the longest of `captions`:
  the smallest ``max_len`` that cuts none (at least 3). Tokenises at
  ``guess`` first, then at doubled lengths while some caption is cut.

  >>> from itr_jax.data.vocab import Vocabulary
  >>> longest_caption(Vocabulary.build(["a b"]), ["a", "a b a b a b"], guess=4)
  8
  """
  _check_max_len(guess)
  while True:
    _, lengths = tokenizer.encode_batch(captions, guess + 1)
    longest = int(np.max(lengths, initial=0))
    if longest <= guess:
      return max(longest, 3)
    guess *= 2


def train_batches(split: PrecomputedSplit, vocab: Vocabulary, *,
                  batch_size: int, seed: int, max_len: int,
                  start_step: int = 0, num_steps: int | None = None,
                  process_index: int | None = None,
                  process_count: int | None = None,
                  prefetch: int = 2, drop_last: bool = True,
                  batch_multiple: int = 1) -> Iterator[Batch]:
  """Iterator of training batches (NumPy dicts; see module doc).

  Its ``close()`` stops the input threads early (done at exit otherwise).

  Args:
    split: the training split.
    vocab: tokenizes the captions: a `Vocabulary`, or a
      `wordpiece_vocab.WordPieceVocabulary` for a BERT text tower.
    batch_size: GLOBAL batch size; each process gets ``batch_size / P`` rows.
    seed: shuffling seed (order depends only on seed and epoch).
    max_len: token length L.
    start_step: first global step (resume); earlier steps are not read.
    num_steps: number of steps to yield; None: forever (epochs loop).
    process_index, process_count: default ``jax.process_index()`` /
      ``jax.process_count()``.
    prefetch: batches prepared ahead.
    drop_last: drop each epoch's leftover captions (True) or train on them as
      a smaller last batch (False; see `last_batch_size`).
    batch_multiple: the last batch's size is a multiple of this (the
      number of batch shards over all devices).
  """
  _check_max_len(max_len)
  steps_per_epoch(split, batch_size, drop_last=drop_last)  # validates both
  if seed < 0 or start_step < 0:
    raise ValueError(f"seed and start_step must be >= 0, got seed={seed}, "
                     f"start_step={start_step}")
  rows = _process_slice(batch_size, process_index, process_count)
  assembler = _Assembler(split, vocab, max_len)
  n = split.num_captions
  if not drop_last:
    _process_slice(last_batch_size(n, batch_size, batch_multiple) or batch_size,
                   process_index, process_count)  # fails now, not mid-epoch

  def make(step):
    ids = train_caption_ids(n, batch_size=batch_size, seed=seed, step=step,
                            drop_last=drop_last, batch_multiple=batch_multiple)
    # The last, smaller batch has its own process slice.
    own = (_process_slice(len(ids), process_index, process_count)
           if len(ids) != batch_size else rows)
    ids = np.asarray(ids[own])
    # Image augmentation seeds: a function of (seed, step, global row), so
    # every process count and every resume draws the same crops.
    positions = step * batch_size + np.arange(own.start, own.stop)
    seeds = np.stack([np.full(len(ids), seed), positions], axis=1)
    return assembler.captions(ids, np.ones(ids.shape, bool), with_images=True,
                              seeds=seeds)

  keys = ["images", "tokens", "lengths", "image_ids", "caption_ids", "mask"]
  if assembler.has_emb:
    keys += ["image_caption_emb", "caption_emb"]
  rows_per_batch = rows.stop - rows.start if drop_last else None  # may vary
  stop = None if num_steps is None else start_step + num_steps
  return _batches(start_step, stop, make,
                  assembler.signature(rows_per_batch, keys, max_len), prefetch,
                  assembler.finish(train=True))


class _ClosableIterator:
  """A batch iterator that is closed before the interpreter exits.

  A tf.data iterator destroyed during interpreter finalisation waits for its
  in-flight `tf.numpy_function` calls, which wait for the GIL the finalising
  thread holds: the process hangs at exit. Closing every live iterator from
  an `atexit` hook (threads still run then) avoids that; `close()` does it
  early.
  """

  def __init__(self, iterator):
    self._iterator = iterator
    _LIVE_ITERATORS.add(self)

  def __iter__(self):
    return self

  def __next__(self):
    if self._iterator is None:
      raise StopIteration
    return next(self._iterator)

  def close(self) -> None:
    """Stops the pipeline's threads; the iterator then ends."""
    iterator, self._iterator = self._iterator, None
    del iterator
    gc.collect()


_LIVE_ITERATORS: "weakref.WeakSet[_ClosableIterator]" = weakref.WeakSet()


@atexit.register
def _close_live_iterators() -> None:
  for iterator in list(_LIVE_ITERATORS):
    iterator.close()


def _padded_ids(total: int, batch_size: int, step: int, rows: slice):
  ids = np.arange(step * batch_size, (step + 1) * batch_size)[rows]
  mask = ids < total
  return np.where(mask, ids, 0), mask


def _eval_dataset(total, batch_size, process_index, process_count, make_rows,
                  keys, assembler, max_len, prefetch) -> Iterator[Batch]:
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  rows = _process_slice(batch_size, process_index, process_count)
  num_batches = -(-total // batch_size)

  def make(step):
    ids, mask = _padded_ids(total, batch_size, step, rows)
    return make_rows(ids, mask)

  spec = assembler.signature(rows.stop - rows.start, keys, max_len)
  return _batches(0, num_batches, make, spec, prefetch,
                  assembler.finish(train=False))


def eval_caption_batches(split: PrecomputedSplit, vocab: Vocabulary, *,
                         batch_size: int, max_len: int,
                         with_images: bool = False,
                         process_index: int | None = None,
                         process_count: int | None = None,
                         prefetch: int = 2) -> Iterator[Batch]:
  """Every caption once, in order, in ``ceil(N_captions / batch_size)``
  batches; the last is padded (``mask`` False, ids -1, data of caption 0)."""
  _check_max_len(max_len)
  assembler = _Assembler(split, vocab, max_len)
  keys = ["tokens", "lengths", "image_ids", "caption_ids", "mask"]
  if with_images:
    keys.insert(0, "images")
  if assembler.has_emb:
    keys += (["image_caption_emb"] if with_images else []) + ["caption_emb"]
  return _eval_dataset(
      split.num_captions, batch_size, process_index, process_count,
      lambda ids, mask: assembler.captions(ids, mask, with_images), keys,
      assembler, max_len, prefetch)


def eval_batches(split: PrecomputedSplit, vocab: Vocabulary, *,
                 batch_size: int, max_len: int, **kwargs) -> Iterator[Batch]:
  """Every caption once with its image: all training keys, padded + mask."""
  return eval_caption_batches(split, vocab, batch_size=batch_size,
                              max_len=max_len, with_images=True, **kwargs)


def eval_image_batches(split: PrecomputedSplit, *, batch_size: int,
                       process_index: int | None = None,
                       process_count: int | None = None,
                       prefetch: int = 2) -> Iterator[Batch]:
  """Every image once, in order (``images``, ``image_ids``,
  ``image_caption_emb``, ``mask``); the last batch is padded."""
  assembler = _Assembler(split, None, None)
  keys = ["images", "image_ids", "mask"]
  if assembler.has_emb:
    keys.append("image_caption_emb")
  return _eval_dataset(split.num_images, batch_size, process_index,
                       process_count, assembler.images, keys, assembler, None,
                       prefetch)
