"""A split of TFDS records (``itr_precomputed`` layout) as a `PrecomputedSplit`.

The records are read by index with ``tfds.data_source`` (ArrayRecord files:
random access), so the index-based batch assembler of `pipeline` builds
exactly the batches it builds from ``.npy`` files: the data order stays a
pure function of (seed, epoch, step), a resumed run reads nothing for the
steps it skips, and each process reads only the records of its own rows.

``images``, ``caption_emb`` and ``true_relevance`` are `RecordColumn` views:
``column[ids]`` reads the records of ``ids`` (record i holds image i) and
returns a float32 NumPy array, as indexing a memmap does. The captions come
from the dataset's metadata (written by `tfds_builder`), else from one pass
over the records. Values are not re-checked for NaN/Inf here: the converter
validated them before writing, and the records are not rewritten. Every
record is read once when a split is first opened (`check_records`), so a
damaged file is reported then.

>>> import tempfile
>>> from itr_jax.data import testing, tfds_builder
>>> d = tempfile.mkdtemp()
>>> _ = testing.write_random_split(d + "/src", "train", num_images=3)
>>> _ = tfds_builder.convert(d + "/src", d + "/tfds")
>>> s = load_split("itr_precomputed", d + "/tfds", "train")
>>> s.images.shape, s.images[[2, 0]].shape, s.num_captions, s.emb_dim
((3, 2, 4), (2, 2, 4), 15, 6)
"""
from __future__ import annotations

import collections
import threading
from typing import Sequence

import numpy as np

from itr_jax import optional
from itr_jax.data import precomputed

# Decoded records kept for reuse: a training batch reads each of its images'
# records once for the features and again for the caption embeddings.
_CACHE_BYTES = 256 << 20

_CONVERT = ("convert a precomputed folder with `python -m "
            "itr_jax.data.tfds_builder --data_dir=PRECOMP --out=DIR` and set "
            "config.data.tfds_data_dir=DIR")


class _Records:
  """Decoded records of one split by index, with a bounded LRU cache."""

  def __init__(self, source, record_bytes: int):
    self.source = source
    self._max = max(1, _CACHE_BYTES // max(1, record_bytes))
    self._cache: collections.OrderedDict[int, dict] = collections.OrderedDict()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.source)

  def get(self, ids: Sequence[int]) -> list[dict]:
    """The records of `ids` (repeats allowed), each read at most once."""
    with self._lock:
      found = {}
      for i in ids:
        if i in self._cache:
          self._cache.move_to_end(i)
          found[i] = self._cache[i]
    missing = sorted(set(ids) - found.keys())
    if missing:
      records = self.source.__getitems__(missing)
      with self._lock:
        for i, record in zip(missing, records):
          if int(record["image_id"]) != i:
            raise ValueError(
                f"record {i} holds image_id {int(record['image_id'])}: the "
                "records are not in image order; " + _CONVERT)
          found[i] = self._cache[i] = record
        while len(self._cache) > self._max:
          self._cache.popitem(last=False)
    return [found[i] for i in ids]


class RecordColumn:
  """A read-only float32 ``[N, ...]`` array over one feature of the records.

  Row ``r`` is item ``r % per_record`` of feature `key` of record
  ``r // per_record`` (``per_record=0``: the whole feature), cut to its first
  `width` entries when given. Supports ``column[int]``, ``column[slice]``,
  ``column[int array]`` (NumPy semantics on the rows) and ``np.asarray``.
  """

  dtype = np.dtype(np.float32)

  def __init__(self, records: _Records, key: str, shape: tuple[int, ...], *,
               per_record: int = 0, width: int | None = None):
    self._records, self._key = records, key
    self.shape, self._per, self._width = tuple(shape), per_record, width

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def _rows(self, rows: np.ndarray) -> np.ndarray:
    out = np.empty(rows.shape + self.shape[1:], np.float32)
    flat, flat_out = rows.reshape(-1), out.reshape((-1,) + self.shape[1:])
    per = max(self._per, 1)
    records = self._records.get((flat // per).tolist())
    for j, (row, record) in enumerate(zip(flat, records)):
      value = record[self._key]
      if self._per:
        value = value[row % per]
      if self._width is not None:
        value = value[..., :self._width]
      flat_out[j] = value
    return out

  def __getitem__(self, index):
    rest = ()
    if isinstance(index, tuple):
      index, rest = index[0], index[1:]
    n = self.shape[0]
    if isinstance(index, slice):
      rows = np.arange(n)[index]
    else:
      rows = np.asarray(index)
      if not np.issubdtype(rows.dtype, np.integer):
        raise IndexError(f"RecordColumn rows must be integers or a slice, "
                         f"got {index!r}")
      if ((rows < -n) | (rows >= n)).any():
        raise IndexError(f"row index out of range for {n} rows")
      rows = np.where(rows < 0, rows + n, rows)
    out = self._rows(rows)
    return out[(slice(None),) * rows.ndim + rest] if rest else out

  def __array__(self, dtype=None, copy=None):
    del copy
    out = self[:]
    return out if dtype is None else out.astype(dtype)


def _builder(name: str, data_dir: str | None):
  tfds = optional.require("tensorflow_datasets", "config.data.name='tfds'",
                          "tensorflow-datasets")
  # Imported for its side effect: registers "itr_precomputed".
  from itr_jax.data import tfds_builder  # pylint: disable=g-import-not-at-top,unused-import
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"config.data.tfds_name={name!r} is not a TFDS dataset: "
                     f"{e}") from e
  if not builder.is_prepared():
    raise ValueError(
        f"no prepared TFDS dataset {name!r} (version {builder.version}) in "
        f"{str(builder.data_dir_root)!r} (config.data.tfds_data_dir); {_CONVERT}")
  return builder


def check_records(builder, split: str, source) -> None:
  """Reads every record of `split` once per state of its files, so a damaged
  record is found when the split is opened, not at the batch that needs it
  (or in the evaluation after training). Each file that passed is recorded
  next to it (`check_record`) and not read again until it changes."""
  from itr_jax.data import check_record  # pylint: disable=g-import-not-at-top
  start = 0
  for shard in builder.info.splits[split].file_instructions:
    first, end = start, start + shard.take
    start = end

    def read_all(path=shard.filename, first=first, end=end):
      for lo in range(first, end, 64):
        ids = list(range(lo, min(lo + 64, end)))
        try:
          source.__getitems__(ids)
        except Exception as e:  # pylint: disable=broad-except
          detail = str(e).strip().splitlines()
          raise ValueError(
              f"split {split!r} of {str(builder.data_dir)!r} has a damaged record among "
              f"records {ids[0]}-{ids[-1]} of {path!r} "
              f"({type(e).__name__}: {detail[0][:200] if detail else ''}); regenerate or "
              "copy the dataset again (python -m itr_jax.data.tfds_builder)") from None

    check_record.run_once(shard.filename, "records_readable", read_all)


def dataset_dir(name: str, data_dir: str | None) -> str:
  """The prepared dataset's folder ``{data_dir}/{name}/{version}``."""
  return str(_builder(name, data_dir).data_dir)


def split_captions(name: str, data_dir: str | None, split: str) -> list[str]:
  """The captions of `split`, in caption order (for building a vocabulary)."""
  return load_split(name, data_dir, split).captions


def load_split(name: str, data_dir: str | None, split: str, *,
               max_images: int | None = None,
               require_caption_emb: bool = False) -> precomputed.PrecomputedSplit:
  """Opens `split` of TFDS dataset `name` for random access.

  Args:
    name: a TFDS dataset with the `tfds_builder` features, e.g.
      "itr_precomputed" (or "itr_precomputed:1.1.0").
    data_dir: the TFDS data dir, local or gs:// (array_record >= 0.8.6 reads
      gs:// objects directly, a range request per record); None or "": TFDS's
      default.
    split: split name.
    max_images: keep only the first `max_images` images and their captions;
      None or 0 keeps all.
    require_caption_emb: raise if the split has no caption embeddings.

  Returns:
    A PrecomputedSplit whose arrays are `RecordColumn` views of the records.
  """
  builder = _builder(name, data_dir)
  if split not in builder.info.splits:
    raise ValueError(f"TFDS dataset {name!r} in {str(builder.data_dir)!r} has no "
                     f"split {split!r}; it has {sorted(builder.info.splits)}")
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError as e:
    raise ValueError(f"{str(builder.data_dir)!r} is not in the ArrayRecord format "
                     f"(random access): {e}; {_CONVERT}") from e
  n_img = len(source)
  if n_img == 0:
    raise ValueError(f"split {split!r} of {str(builder.data_dir)!r} is empty")
  check_records(builder, split, source)
  first = source[0]
  records = _Records(source, sum(np.asarray(v).nbytes for v in first.values()))
  meta = (builder.info.metadata or {}).get("splits", {}).get(split)
  if meta is not None:
    captions, per_image = list(meta["captions"]), int(meta["captions_per_image"])
  else:  # another builder's records: read the captions once
    per_image = len(first["captions"])
    captions = [c.decode("utf-8") for i in range(n_img)
                for c in records.get([i])[0]["captions"]]
  precomputed.captions_per_image(n_img, len(captions),
                                 what=f"split {split!r} of {str(builder.data_dir)!r}")
  if max_images:
    if max_images < 0:
      raise ValueError(f"max_images must be >= 0, got {max_images}")
    n_img = min(max_images, n_img)
  n_cap = n_img * per_image
  images = RecordColumn(records, "image", (n_img,) + first["image"].shape)
  emb_dim = first["caption_emb"].shape[-1]
  caption_emb = None
  if emb_dim:
    caption_emb = RecordColumn(records, "caption_emb", (n_cap, emb_dim),
                               per_record=per_image)
  elif require_caption_emb:
    raise ValueError(
        f"split {split!r} of {str(builder.data_dir)!r} has no caption embeddings; "
        "write {split}_caps_emb.npy into the precomputed folder (python -m "
        "itr_jax.tools.embed_captions) and convert it again")
  true_relevance = None
  if first["relevance"].shape[0]:
    true_relevance = RecordColumn(records, "relevance", (n_img, n_cap),
                                  width=n_cap)
  return precomputed.PrecomputedSplit(
      data_dir=str(builder.data_dir), split=split, images=images,
      captions=captions[:n_cap], captions_per_image=per_image,
      caption_emb=caption_emb, true_relevance=true_relevance)
