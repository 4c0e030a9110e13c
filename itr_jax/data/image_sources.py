"""Where a split's images come from: files under a root, or ArrayRecord shards.

A dataset from raw images is the precomputed format (``precomputed.py``)
with ``{split}_ims.npy`` replaced by a list of images:

* ``{split}_images.txt``: one image path per line, relative to
  ``config.data.image_root`` (local or gs://), image i of the split on line
  i; its captions are lines ``5i..5i+4`` of ``{split}_caps.txt`` as usual.
  Written from a Karpathy split JSON by ``itr_jax.data.karpathy``.
* or ``{split}-NNNNN-of-MMMMM.array_record`` shards in the dataset folder,
  written by ``itr_jax.data.image_records`` (encoded image bytes, captions
  and ids; record i holds image i).

Both are an `ImageSource`: ``len``, slicing (``source[:n]``), ``read(i)``
(the encoded bytes of image i) and ``name(i)`` (for messages). The pipeline
decodes the bytes with `image_preprocessing` in a parallel tf.data map.

Paths from data never leave their root: absolute paths, ``..`` components,
backslashes and empty names are refused (`safe_relative_path`).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import posixpath
import re
from typing import Callable, Protocol, Sequence

from itr_jax import filesystem as fs
from itr_jax.data.image_preprocessing import ImagePreprocessing

IMAGES_SUFFIX = "_images.txt"
# Bound on one encoded image: a larger file is an error, not an allocation.
MAX_IMAGE_BYTES = 64 << 20
MAX_LIST_BYTES = 1 << 30  # one relative path per image
# Pillow refuses images above this many pixels (decompression bombs).
MAX_PIXELS = 1 << 28
_SHARD = re.compile(r"^(?P<split>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.array_record$")


class ImageSource(Protocol):
  """What a split's ``images`` is when the dataset holds raw images."""
  preprocessing: ImagePreprocessing | None

  @property
  def shape(self) -> tuple[int]: ...
  def __len__(self) -> int: ...
  def __getitem__(self, index: slice) -> "ImageSource": ...
  def read(self, i: int) -> bytes: ...
  def name(self, i: int) -> str: ...


def is_image_source(images) -> bool:
  """True for an `ImageSource`, False for a region-feature array."""
  return hasattr(images, "read") and hasattr(images, "preprocessing")


def safe_relative_path(path: str, *, where: str) -> str:
  """`path` normalised, or ValueError if it could leave its root folder.

  >>> safe_relative_path("val2014/./x.jpg", where="line 1")
  'val2014/x.jpg'
  >>> safe_relative_path("../etc/passwd", where="line 2")
  Traceback (most recent call last):
  ...
  ValueError: line 2: image path '../etc/passwd' must be relative to the image root, without '..' components or backslashes
  """
  norm = posixpath.normpath(path) if path else ""
  if (not path or "\\" in path or "\x00" in path or path.startswith("/")
      or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", path) or norm == "."
      or norm == ".." or norm.startswith("../") or "/../" in f"/{path}/"):
    raise ValueError(f"{where}: image path {path!r} must be relative to the "
                     "image root, without '..' components or backslashes")
  return norm


def read_image_list(path: str) -> list[str]:
  """The checked relative image paths of a ``{split}_images.txt``."""
  if not fs.isfile(path):
    raise ValueError(f"missing image list {path!r}")
  lines = fs.read_text(path, MAX_LIST_BYTES, what="image list").split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  if not lines:
    raise ValueError(f"image list {path!r} is empty")
  return [safe_relative_path(line.strip(), where=f"{path} line {i + 1}")
          for i, line in enumerate(lines)]


def read_bounded(path: str) -> bytes:
  """The bytes of `path`, or ValueError naming it if unreadable or too large."""
  try:
    return fs.read_bounded(path, MAX_IMAGE_BYTES, what="image")
  except (OSError, FileNotFoundError) as e:
    raise ValueError(f"cannot read image {path!r}: {e}") from e
  except Exception as e:  # tf.errors.OpError from gfile on gs://
    if type(e).__module__.startswith("tensorflow"):
      raise ValueError(f"cannot read image {path!r}: {e}") from e
    raise


def check_image(data: bytes, name: str) -> tuple[int, int]:
  """(width, height) after a full decode, or ValueError naming the image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.width * image.height > MAX_PIXELS:
        raise ValueError(f"{image.width}x{image.height} pixels, over the "
                         f"{MAX_PIXELS}-pixel limit")
      image.load()  # decodes everything: truncation shows here
      return image.width, image.height
  except Exception as e:  # Pillow raises many types on bad bytes
    raise ValueError(f"image {name!r} is corrupt or truncated ({e}); replace "
                     "it, or convert the dataset with `python -m "
                     "itr_jax.data.image_records --skip_corrupt` to leave it "
                     "out") from e


def check_all(source, workers: int = 8) -> None:
  """Reads and fully decodes every image of `source` (threads: Pillow
  decodes outside the GIL); ValueError naming the first bad one."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    for _ in pool.map(lambda i: check_image(source.read(i), source.name(i)),
                      range(len(source))):
      pass


@dataclasses.dataclass(frozen=True)
class ImageFiles:
  """Image i is the file ``root/paths[i]``."""
  root: str
  paths: tuple[str, ...]
  preprocessing: ImagePreprocessing | None = None

  @property
  def shape(self) -> tuple[int]:
    return (len(self.paths),)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: slice) -> "ImageFiles":
    if not isinstance(index, slice):
      raise TypeError("ImageFiles supports slicing; read(i) gives image i")
    return dataclasses.replace(self, paths=self.paths[index])

  def name(self, i: int) -> str:
    return fs.join(self.root, self.paths[i])

  def read(self, i: int) -> bytes:
    return read_bounded(self.name(i))


def shard_names(directory: str, split: str) -> list[str]:
  """The complete, ordered ``{split}-i-of-n.array_record`` shards in
  `directory` ([] when there are none); ValueError if some are missing."""
  found = {}
  for name in fs.listdir(directory) if fs.isdir(directory) else []:
    m = _SHARD.match(name)
    if m and m["split"] == split:
      found[int(m["i"])] = (int(m["n"]), name)
  if not found:
    return []
  totals = {n for n, _ in found.values()}
  if len(totals) != 1 or sorted(found) != list(range(next(iter(totals)))):
    raise ValueError(f"{directory!r} holds an incomplete set of {split} shards "
                     f"{sorted(n for _, n in found.values())}; rerun the "
                     "converter (python -m itr_jax.data.image_records)")
  return [found[i][1] for i in sorted(found)]


@dataclasses.dataclass(frozen=True)
class ImageRecords:
  """Image i is record i of ArrayRecord shards (``image_records`` format)."""
  paths: tuple[str, ...]
  count: int
  start: int = 0
  preprocessing: ImagePreprocessing | None = None
  parse: Callable[[bytes], dict] | None = None

  @property
  def shape(self) -> tuple[int]:
    return (self.count,)

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, index: slice) -> "ImageRecords":
    if not isinstance(index, slice) or index.step not in (None, 1):
      raise TypeError("ImageRecords supports contiguous slices only")
    start, stop, _ = index.indices(self.count)
    return dataclasses.replace(self, start=self.start + start,
                               count=max(0, stop - start))

  def _source(self):
    # Opened lazily, once per process (not picklable, not needed before use).
    source = _SOURCES.get(self.paths)
    if source is None:
      from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
      source = array_record_data_source.ArrayRecordDataSource(list(self.paths))
      _SOURCES[self.paths] = source
    return source

  def record(self, i: int) -> dict:
    if not 0 <= i < self.count:
      raise IndexError(f"image {i} out of range [0, {self.count})")
    return self.parse(self._source()[self.start + i])

  def name(self, i: int) -> str:
    return f"record {self.start + i} of {os.path.dirname(self.paths[0])}"

  def read(self, i: int) -> bytes:
    return self.record(i)["image"]


_SOURCES: dict[Sequence[str], object] = {}


def parse_record(data: bytes) -> dict:
  """The plain values of one record: image bytes, path, captions, ids."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    feature = tf.train.Example.FromString(data).features.feature
    image = feature["image"].bytes_list.value[0]
    return {"image": image,
            "path": feature["path"].bytes_list.value[0].decode("utf-8"),
            "captions": [c.decode("utf-8") for c in feature["captions"].bytes_list.value],
            "caption_ids": list(feature["caption_ids"].int64_list.value)}
  except Exception as e:  # protobuf DecodeError, missing key, bad UTF-8
    raise ValueError(f"not an image record ({type(e).__name__}: {e}); "
                     "rerun the converter") from e


def open_records(data_dir: str, split: str, preprocessing=None) -> ImageRecords:
  """The `ImageRecords` of `split`'s shards in `data_dir`."""
  from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
  paths = tuple(os.path.join(data_dir, n)
                for n in shard_names(data_dir, split))
  count = len(array_record_data_source.ArrayRecordDataSource(list(paths)))
  return ImageRecords(paths, count, preprocessing=preprocessing,
                                    parse=parse_record)
