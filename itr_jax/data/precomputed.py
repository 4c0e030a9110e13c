"""Loader for the community precomputed ITR format (SCAN / VSE++ / Listwise_ITR).

A dataset directory holds, per split (``train``, ``dev``, ``test``, ...):

* ``{split}_ims.npy``: float ``[N_images, R, F]`` region features (BUTD:
  R=36, F=2048). Opened with ``np.load(mmap_mode="r")``, never read whole.
* ``{split}_caps.txt``: one caption per line; either 5 per image in image
  order (caption ``c`` describes image ``c // 5``) or one per image.
* ``{split}_caps_emb.npy`` (optional; path overridable): float
  ``[N_captions, D]`` sentence embeddings aligned with the captions, used by
  RSC relevance.
* Instead of ``{split}_ims.npy``, a dataset of raw images has
  ``{split}_images.txt`` (image paths under an image root) or ArrayRecord
  shards of encoded images (``image_sources``); ``images`` is then an
  `image_sources.ImageSource` that the pipeline decodes.
* ``{split}_relevance.npy`` (optional, synthetic data only): float
  ``[N_images, N_captions]`` ground-truth graded relevance in [0, 1].

Everything is validated up front (files, ranks, dtypes, counts, NaN/Inf,
empty captions, constant or identical embedding rows), so a bad dataset
fails before any training work.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> np.save(f"{d}/dev_ims.npy", np.zeros((2, 3, 4), np.float32))
>>> _ = open(f"{d}/dev_caps.txt", "w").write("a dog\\n" * 10)
>>> s = load_split(d, "dev")
>>> s.num_images, s.num_captions, s.captions_per_image, s.caption_emb
(2, 10, 5, None)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from itr_jax import filesystem as fs
from itr_jax.data import caption_embeddings

# Rows of a memmap checked for NaN/Inf at a time: bounded memory on 100k-image
# feature files, while large enough to keep the check I/O-bound.
_CHECK_CHUNK_BYTES = 64 << 20
MAX_TEXT_BYTES = 1 << 30  # captions and image lists: COCO's are a few MB


@dataclasses.dataclass(frozen=True)
class PrecomputedSplit:
  """One split of a precomputed dataset.

  Attributes:
    data_dir: the dataset directory.
    split: the split name, e.g. "train".
    images: ``[N_images, R, F]`` float region features (a read-only memmap),
      or the split's raw images (an `image_sources.ImageSource`).
    captions: the ``N_captions`` caption strings.
    captions_per_image: C = 5 (caption c belongs to image c // 5) or 1.
    caption_emb: ``[N_captions, D]`` float sentence embeddings (read-only
      memmap), or None when the split has none.
    true_relevance: ``[N_images, N_captions]`` ground-truth graded relevance,
      or None.
  """
  data_dir: str
  split: str
  images: np.ndarray
  captions: list[str]
  captions_per_image: int
  caption_emb: np.ndarray | None = None
  true_relevance: np.ndarray | None = None

  @property
  def num_images(self) -> int:
    return int(self.images.shape[0])

  @property
  def num_captions(self) -> int:
    return len(self.captions)

  @property
  def num_regions(self) -> int:
    return int(self.images.shape[1])

  @property
  def feature_dim(self) -> int:
    return int(self.images.shape[2])

  @property
  def image_input_shape(self) -> tuple[int, ...]:
    """Shape of one image as the model sees it: ``(R, F)`` region features,
    ``(E,)`` a LiT split's embeddings, or ``(S, S, 3)`` pixels for raw
    images (S from their preprocessing)."""
    preprocessing = getattr(self.images, "preprocessing", None)
    if preprocessing is not None:
      return (preprocessing.size, preprocessing.size, 3)
    return tuple(int(n) for n in self.images.shape[1:])

  @property
  def emb_dim(self) -> int | None:
    return None if self.caption_emb is None else int(self.caption_emb.shape[1])

  def image_of_caption(self, caption_ids) -> np.ndarray:
    """Image index of each caption index: ``caption_ids // C``."""
    return np.asarray(caption_ids) // self.captions_per_image

  def captions_of_image(self, image_ids) -> np.ndarray:
    """Caption indices ``[..., C]`` of each image index."""
    c = self.captions_per_image
    return np.asarray(image_ids)[..., None] * c + np.arange(c)


def _listing(data_dir: str, shown: int = 8) -> str:
  """What `data_dir` holds: its splits, else (some of) its files."""
  try:
    names = sorted(os.listdir(data_dir))
  except OSError:
    return f"directory {data_dir!r} does not exist or cannot be listed"
  splits = available_splits(data_dir)
  if splits:
    return f"{data_dir!r} has the splits {splits} (pass one of them)"
  more = f" and {len(names) - shown} more" if len(names) > shown else ""
  return f"{data_dir!r} holds no split; it contains {names[:shown]}{more}"


def _open_npy(path: str, what: str) -> np.ndarray:
  if not os.path.isfile(path):
    raise ValueError(f"missing {what} file {os.path.basename(path)!r}; "
                     f"{_listing(os.path.dirname(path) or '.')}")
  try:
    return np.load(path, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read {what} file {path!r} as a .npy array: {e}"
                     ) from e


def _check_float(array: np.ndarray, path: str, rank: int, shape_doc: str):
  if array.ndim != rank:
    raise ValueError(f"{path!r} must have rank {rank} {shape_doc}; got shape "
                     f"{array.shape}")
  if not np.issubdtype(array.dtype, np.floating):
    raise ValueError(f"{path!r} must hold floats {shape_doc}; got dtype "
                     f"{array.dtype}")


def check_finite(array: np.ndarray, path: str) -> None:
  """Raises ValueError naming the first row of ``array`` with a NaN or Inf.

  Reads a memmap in ~64 MiB chunks of rows, never all at once.
  """
  row_bytes = max(1, array[:1].nbytes)
  chunk = max(1, _CHECK_CHUNK_BYTES // row_bytes)
  for start in range(0, array.shape[0], chunk):
    block = np.asarray(array[start:start + chunk])
    finite = np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
    if not finite.all():
      row = start + int(np.argmin(finite))
      raise ValueError(f"{path!r} has NaN or Inf values (first in row {row}); "
                       "regenerate the file")


def check_embedding_rows(array: np.ndarray, path: str) -> None:
  """Raises ValueError if sentence-embedding rows make RSC relevance meaningless.

  RSC is ``(1 + cos) / 2``: a row whose entries are all equal (all zero
  included) has an undefined or meaningless cosine (zero rows give relevance
  0.5 to everything), and a matrix whose rows are all identical grades every
  pair 1. Reads ~64 MiB of rows at a time.
  """
  if array.shape[0] == 0 or array.shape[1] < 2:
    return
  row_bytes = max(1, array[:1].nbytes)
  chunk = max(1, _CHECK_CHUNK_BYTES // row_bytes)
  first = np.asarray(array[0], np.float64)
  all_same = True
  for start in range(0, array.shape[0], chunk):
    block = np.asarray(array[start:start + chunk], np.float64)
    constant = block.max(axis=1) == block.min(axis=1)
    if constant.any():
      row = start + int(np.argmax(constant))
      raise ValueError(
          f"{path!r} row {row} is constant (every entry {block[row - start, 0]:g}), "
          "so its cosine similarity, and the RSC relevance of its caption, "
          "is undefined; regenerate the embeddings with a sentence encoder "
          "(python -m itr_jax.tools.embed_captions)")
    all_same = all_same and bool((block == first).all())
  if all_same and array.shape[0] > 1:
    raise ValueError(f"{path!r} has {array.shape[0]} identical rows, so RSC "
                     "relevance would grade every pair 1; regenerate the "
                     "embeddings with a sentence encoder "
                     "(python -m itr_jax.tools.embed_captions)")


def read_captions(path: str) -> list[str]:
  """Reads one caption per line, stripped; empty lines raise ValueError.

  Lines end at \n or \r\n only (a form feed or U+2028 inside a caption is
  part of it), and a UTF-8 byte-order mark is dropped.
  """
  if not os.path.isfile(path):
    raise ValueError(f"missing captions file {os.path.basename(path)!r}; "
                     f"{_listing(os.path.dirname(path) or '.')}")
  try:
    # utf-8-sig drops a leading byte-order mark; splitting at "\n" alone (not
    # str.splitlines) ends lines only at \n (or \r\n), as for `wc -l`: a form
    # feed or U+2028 inside a caption does not split it.
    lines = fs.read_text(path, MAX_TEXT_BYTES, what="captions file",
                         encoding="utf-8-sig").split("\n")
  except OSError as e:
    raise ValueError(f"cannot read captions file {path!r}: {e}") from e
  if lines and lines[-1] == "":
    lines.pop()  # the final newline ends the last line
  captions = [line.strip() for line in lines]
  for i, caption in enumerate(captions):
    if not caption:
      raise ValueError(f"{path!r} line {i + 1} is an empty caption; every "
                       "line must hold one caption")
  if not captions:
    raise ValueError(f"captions file {path!r} is empty")
  return captions


def captions_per_image(num_images: int, num_captions: int, *,
                       what: str = "split") -> int:
  """5 for the 5-captions-per-image layout, 1 for 1:1; else ValueError."""
  if num_images > 0 and num_captions == 5 * num_images:
    return 5
  if num_images > 0 and num_captions == num_images:
    return 1
  raise ValueError(
      f"{what} has {num_images} images and {num_captions} captions; expected "
      f"5 captions per image ({5 * num_images} captions, caption c belonging "
      f"to image c // 5) or one per image ({num_images} captions)")


def _embed_fix(data_dir: str, split: str, emb_path: str, explicit: bool, *,
               exists: bool) -> str:
  """What to run to (re)write the caption embeddings of `split`."""
  out = (f" --out={emb_path}" if explicit and os.path.abspath(emb_path) !=
         os.path.abspath(os.path.join(data_dir, f"{split}_caps_emb.npy"))
         else "")
  # The tool refuses to replace a file it cannot vouch for without this.
  overwrite = " --overwrite" if exists else ""
  return (f"run `python -m itr_jax.tools.embed_captions --data_dir={data_dir} "
          f"--split={split}{out}{overwrite}` (sentence encoder) or `python -m "
          f"itr_jax.data.text_features --data_dir {data_dir}` (TF-IDF "
          f"stand-in), which write one row per line of {split}_caps.txt to "
          f"{os.path.basename(emb_path)}")


def _open_images(data_dir: str, split: str, image_root: str | None,
                 preprocessing) -> tuple[object, str]:
  """(images, path) of `split`: the region features, else its raw images."""
  ims_path = os.path.join(data_dir, f"{split}_ims.npy")
  if os.path.exists(ims_path):
    images = _open_npy(ims_path, "image features")
    _check_float(images, ims_path, 3, "[N_images, regions, feature_dim]")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
      raise ValueError(f"{ims_path!r} has an empty dimension: {images.shape}")
    return images, ims_path
  # Imported here: the region-feature path needs neither.
  from itr_jax.data import image_sources  # pylint: disable=g-import-not-at-top
  if image_sources.shard_names(data_dir, split):
    return (image_sources.open_records(data_dir, split, preprocessing),
            os.path.join(data_dir, f"{split}-*.array_record"))
  list_path = os.path.join(data_dir, split + image_sources.IMAGES_SUFFIX)
  if os.path.exists(list_path):
    if not image_root:
      raise ValueError(
          f"{list_path!r} lists image files relative to an image root, but "
          "none was given: set --config.data.image_root=/path/to/images "
          "(itr-train, itr-evaluate); an imported CLIP / SigLIP workdir takes it "
          "at import (itr-import-dual-encoder --image_root)")
    paths = image_sources.read_image_list(list_path)
    return (image_sources.ImageFiles(image_root, tuple(paths), preprocessing),
            list_path)
  raise ValueError(
      f"missing image features file {split + '_ims.npy'!r} (or, for raw "
      f"images, {split}_images.txt or {split}-*.array_record shards); "
      f"{_listing(data_dir)}")


def load_split(data_dir: str, split: str, *,
               caption_emb_path: str | None = None,
               require_caption_emb: bool = False,
               max_images: int | None = None,
               check_values: bool = True,
               image_root: str | None = None,
               preprocessing=None) -> PrecomputedSplit:
  """Opens and validates one split of a precomputed dataset.

  Args:
    data_dir: the dataset directory.
    split: split name; reads ``{split}_ims.npy`` and ``{split}_caps.txt``.
    caption_emb_path: sentence embeddings ``[N_captions, D]``; default
      ``{data_dir}/{split}_caps_emb.npy`` if present (else no embeddings).
      An explicit path must exist.
    require_caption_emb: raise if the split has no caption embeddings (RSC
      relevance needs them).
    max_images: keep only the first ``max_images`` images and their captions
      (e.g. to validate on part of a large dev set); None or 0 keeps all.
    check_values: scan features and embeddings for NaN/Inf (reads the whole
      feature file once, in chunks), or decode every listed image file once;
      a file that passed before and has not changed since is not scanned
      again (`check_record`; for image files: the list file).
    image_root: folder (local or gs://) of the files a ``{split}_images.txt``
      lists; unused for region features and record shards.
    preprocessing: the `image_preprocessing.ImagePreprocessing` attached to
      a split of raw images (the pipeline needs it to decode them).

  Returns:
    A PrecomputedSplit.
  """
  images, ims_path = _open_images(data_dir, split, image_root, preprocessing)
  features = isinstance(images, np.ndarray)  # else raw images, checked on decode
  caps_path = os.path.join(data_dir, f"{split}_caps.txt")
  captions = read_captions(caps_path)
  per_image = captions_per_image(
      images.shape[0], len(captions),
      what=f"split {split!r} ({os.path.basename(ims_path)}, "
      f"{os.path.basename(caps_path)})")

  explicit = caption_emb_path is not None and caption_emb_path != ""
  emb_path = (caption_emb_path if explicit else
              os.path.join(data_dir, f"{split}_caps_emb.npy"))
  caption_emb = None
  if explicit or os.path.exists(emb_path):
    caption_emb = _open_npy(emb_path, "caption embedding")
    _check_float(caption_emb, emb_path, 2, "[N_captions, D]")
    if caption_emb.shape[0] != len(captions):
      raise ValueError(
          f"{emb_path!r} has {caption_emb.shape[0]} rows but "
          f"{os.path.basename(caps_path)} has {len(captions)} captions; the "
          f"embeddings must be aligned with the captions: "
          f"{_embed_fix(data_dir, split, emb_path, explicit, exists=True)}")
    if os.path.isfile(caption_embeddings.sidecar_path(emb_path)):
      # The provenance sidecar also catches captions edited after embedding
      # with their count unchanged.
      caption_embeddings.check_sidecar(emb_path, caps_path, len(captions))
  elif require_caption_emb:
    raise ValueError(
        f"split {split!r} has no caption embeddings "
        f"({os.path.basename(emb_path)} not found; {_listing(data_dir)}); "
        f"{_embed_fix(data_dir, split, emb_path, explicit, exists=False)}")

  rel_path = os.path.join(data_dir, f"{split}_relevance.npy")
  true_relevance = None
  if os.path.exists(rel_path):
    true_relevance = _open_npy(rel_path, "relevance")
    _check_float(true_relevance, rel_path, 2, "[N_images, N_captions]")
    if true_relevance.shape != (images.shape[0], len(captions)):
      raise ValueError(f"{rel_path!r} has shape {true_relevance.shape}; "
                       f"expected [N_images, N_captions] = "
                       f"{(images.shape[0], len(captions))}")

  whole = True
  if max_images:
    if max_images < 0:
      raise ValueError(f"max_images must be >= 0, got {max_images}")
    n_img = min(max_images, images.shape[0])
    whole = n_img == images.shape[0]
    n_cap = n_img * per_image
    images, captions = images[:n_img], captions[:n_cap]
    if caption_emb is not None:
      caption_emb = caption_emb[:n_cap]
    if true_relevance is not None:
      true_relevance = true_relevance[:n_img, :n_cap]

  if check_values:
    # Recorded next to each file once it passed (the whole file only).
    from itr_jax.data import check_record  # pylint: disable=g-import-not-at-top
    if features:
      checks = [(ims_path, "finite", lambda: check_finite(images, ims_path))]
    elif ims_path.endswith("_images.txt"):
      # Image files: each decoded once, so a corrupt one is named now rather
      # than failing a decode hours into training (shards were checked when
      # converted). The record follows the list file, not each image.
      from itr_jax.data import image_sources  # pylint: disable=g-import-not-at-top
      checks = [(ims_path, "images_decode", lambda: image_sources.check_all(images))]
    else:
      checks = []
    if caption_emb is not None:
      checks += [(emb_path, "finite", lambda: check_finite(caption_emb, emb_path)),
                 (emb_path, "embedding_rows",
                  lambda: check_embedding_rows(caption_emb, emb_path))]
    if true_relevance is not None:
      checks.append((rel_path, "finite",
                     lambda: check_finite(true_relevance, rel_path)))
    for path, name, check in checks:
      check_record.run_once(path, name, check, record=whole)
  return PrecomputedSplit(data_dir=data_dir, split=split, images=images,
                          captions=captions, captions_per_image=per_image,
                          caption_emb=caption_emb,
                          true_relevance=true_relevance)


def available_splits(data_dir: str,
                     candidates: Sequence[str] | None = None) -> list[str]:
  """Split names with ``{split}_caps.txt`` and ``{split}_ims.npy`` or
  ``{split}_images.txt``."""
  names = set(os.listdir(data_dir)) if os.path.isdir(data_dir) else set()
  found = sorted({n[:-len(suffix)] for n in names
                  for suffix in ("_ims.npy", "_images.txt")
                  if n.endswith(suffix) and n[:-len(suffix)] + "_caps.txt" in names})
  if candidates is not None:
    found = [s for s in candidates if s in found]
  return found
