r"""Converts a dataset of image files into ArrayRecord shards (local or gs://).

  python -m itr_jax.data.image_records --data_dir=data/f30k_images \
      --image_root=/data/flickr30k-images --out=gs://bucket/f30k_records \
      [--skip_corrupt] [--images_per_shard=5000]

``data_dir`` is a raw-image dataset folder (``{split}_images.txt`` +
``{split}_caps.txt``, e.g. written by ``itr_jax.data.karpathy``); every
image is read from ``image_root`` and fully decoded once (Pillow), so a
corrupt or truncated file is found now, not hours into a run: an error naming
the file, or with ``--skip_corrupt`` the image and its captions are left out
and counted. ``out`` receives, per split:

* ``{split}-NNNNN-of-MMMMM.array_record``: record i is image i, a
  ``tf.train.Example`` with ``image`` (the file's encoded bytes, unchanged),
  ``path`` (its path under the image root, the image's id), ``captions`` and
  ``caption_ids`` (their lines in the source ``{split}_caps.txt``);
* ``{split}_caps.txt``, ``{split}_images.txt`` (the paths, as ids), and
  the source's ``{split}_caps_emb.npy`` (+ sidecar) and
  ``{split}_relevance.npy`` when present and nothing was skipped (after a
  skip, rerun ``itr_jax.tools.embed_captions`` on the new captions file);
* ``vocab.json`` (if the source has one) and ``image_records.json`` (counts,
  skipped files), written last: its presence marks a complete conversion.

Nothing is written into ``out`` until every image has been checked; an
existing non-empty ``out`` is refused. Train from it with
``--config.data.name=images --config.data.data_dir=OUT``.
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import sys
import tempfile
from typing import Sequence

import numpy as np

from itr_jax import filesystem as fs
from itr_jax.data import image_sources
from itr_jax.data import precomputed

MANIFEST = "image_records.json"
FORMAT = "itr_jax.image_records/1"
VOCAB_FILE = "vocab.json"
# Pillow refuses images above this many pixels (decompression bombs).
MAX_PIXELS = 1 << 28


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
                     "it, or pass --skip_corrupt to leave it out") from e


def encode_record(image: bytes, path: str, captions: Sequence[str],
                  caption_ids: Sequence[int]) -> bytes:
  """One serialized ``tf.train.Example`` record (see module doc)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = {
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
      "path": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[path.encode("utf-8")])),
      "captions": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[c.encode("utf-8") for c in captions])),
      "caption_ids": tf.train.Feature(int64_list=tf.train.Int64List(
          value=list(caption_ids))),
  }
  return tf.train.Example(features=tf.train.Features(
      feature=feature)).SerializeToString()


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


def open_records(data_dir: str, split: str, preprocessing=None) -> image_sources.ImageRecords:
  """The `ImageRecords` of `split`'s shards in `data_dir`."""
  from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
  paths = tuple(os.path.join(data_dir, n)
                for n in image_sources.shard_names(data_dir, split))
  count = len(array_record_data_source.ArrayRecordDataSource(list(paths)))
  return image_sources.ImageRecords(paths, count, preprocessing=preprocessing,
                                    parse=parse_record)


def _split_plan(data_dir: str, split: str) -> dict:
  paths = image_sources.read_image_list(
      os.path.join(data_dir, split + image_sources.IMAGES_SUFFIX))
  captions = precomputed.read_captions(os.path.join(data_dir, f"{split}_caps.txt"))
  per = precomputed.captions_per_image(len(paths), len(captions),
                                       what=f"split {split!r}")
  return {"paths": paths, "captions": captions, "per": per}


def _write_split(tmp: str, data_dir: str, split: str, plan: dict, image_root: str,
                 skip_corrupt: bool, images_per_shard: int, workers: int) -> dict:
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  paths, captions, per = plan["paths"], plan["captions"], plan["per"]
  num_shards = max(1, -(-len(paths) // images_per_shard))
  writers = [array_record_module.ArrayRecordWriter(
      os.path.join(tmp, f"{split}-{i:05d}-of-{num_shards:05d}.array_record"),
      "group_size:1") for i in range(num_shards)]
  kept, skipped = [], []

  def load(i):
    name = fs.join(image_root, paths[i])
    data = image_sources.read_bounded(name)
    check_image(data, name)
    return data

  def checked(i):
    try:
      return load(i), None
    except ValueError as e:
      if not skip_corrupt:
        raise
      return None, str(e)

  try:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      # Ordered, in chunks: at most `chunk` images in memory at once.
      chunk = 4 * workers
      for start in tqdm(range(0, len(paths), chunk), desc=f"{split} images",
                        unit_scale=chunk, disable=len(paths) <= chunk):
        indices = range(start, min(start + chunk, len(paths)))
        for j, (data, error) in zip(indices, pool.map(checked, indices)):
          if error is not None:
            skipped.append({"path": paths[j], "error": error})
            continue
          ids = list(range(j * per, (j + 1) * per))
          # Contiguous blocks of images per shard: record i is image i.
          writers[j * num_shards // len(paths)].write(
              encode_record(data, paths[j], [captions[c] for c in ids], ids))
          kept.append(j)
  finally:
    for w in writers:
      w.close()
  return {"kept": kept, "skipped": skipped}


def convert(data_dir: str, out: str, *, image_root: str, skip_corrupt: bool = False,
            images_per_shard: int = 5000, splits: Sequence[str] | None = None,
            workers: int = 8) -> dict:
  """Writes ArrayRecord shards of `data_dir`'s splits into `out`; returns the
  manifest. ValueError (nothing written to `out`) on a bad source, an
  existing non-empty `out`, or a corrupt image without `skip_corrupt`."""
  if images_per_shard < 1:
    raise ValueError(f"images_per_shard must be >= 1, got {images_per_shard}")
  if fs.exists(out) and (not fs.isdir(out) or fs.listdir(out)):
    raise ValueError(f"--out={out!r} exists and is not an empty folder; pass a "
                     "new folder (nothing is overwritten)")
  names = [s for s in precomputed.available_splits(data_dir)
           if os.path.exists(os.path.join(data_dir, s + image_sources.IMAGES_SUFFIX))]
  if splits:
    missing = sorted(set(splits) - set(names))
    if missing:
      raise ValueError(f"--data_dir={data_dir!r} has no split {missing} "
                       f"(found {names})")
    names = list(splits)
  if not names:
    raise ValueError(f"--data_dir={data_dir!r} holds no split of image files: "
                     "expected {split}_images.txt with {split}_caps.txt "
                     "(python -m itr_jax.data.karpathy writes them)")
  plans = {s: _split_plan(data_dir, s) for s in names}  # all checked first
  manifest = {"format": FORMAT, "source": os.path.abspath(data_dir),
              "image_root": image_root, "splits": {}}
  with tempfile.TemporaryDirectory(prefix="itr_image_records_") as tmp:
    for split, plan in plans.items():
      result = _write_split(tmp, data_dir, split, plan, image_root, skip_corrupt,
                            images_per_shard, workers)
      kept, per = result["kept"], plan["per"]
      if not kept:
        raise ValueError(f"every image of split {split!r} is corrupt or missing")
      caption_rows = (np.asarray(kept)[:, None] * per + np.arange(per)).reshape(-1)
      with open(os.path.join(tmp, f"{split}_caps.txt"), "w", encoding="utf-8") as f:
        f.write("".join(plan["captions"][c] + "\n" for c in caption_rows))
      with open(os.path.join(tmp, split + image_sources.IMAGES_SUFFIX), "w",
                encoding="utf-8") as f:
        f.write("".join(plan["paths"][i] + "\n" for i in kept))
      if not result["skipped"]:  # still aligned: carried over unchanged
        for name in (f"{split}_caps_emb.npy", f"{split}_caps_emb.json",
                     f"{split}_relevance.npy"):
          if os.path.exists(os.path.join(data_dir, name)):
            shutil.copy(os.path.join(data_dir, name), os.path.join(tmp, name))
      manifest["splits"][split] = {
          "images": len(kept), "captions": len(caption_rows),
          "skipped": result["skipped"]}
    if os.path.exists(os.path.join(data_dir, VOCAB_FILE)):
      shutil.copy(os.path.join(data_dir, VOCAB_FILE), os.path.join(tmp, VOCAB_FILE))
    with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=1)
    fs.makedirs(out)
    # The manifest last: it marks a complete conversion.
    for name in sorted(os.listdir(tmp), key=lambda n: n == MANIFEST):
      fs.copy(os.path.join(tmp, name), fs.join(out, name))
  return manifest


def _define_flags(fv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("data_dir", None, "Raw-image dataset folder "
                      "({split}_images.txt, {split}_caps.txt).", flag_values=fv)
  flags.DEFINE_string("image_root", None, "Folder of the image files "
                      "(local or gs://).", flag_values=fv)
  flags.DEFINE_string("out", None, "New folder for the shards (local or gs://).",
                      flag_values=fv)
  flags.DEFINE_bool("skip_corrupt", False, "Leave out corrupt images (and "
                    "their captions), counted in the manifest; default: error.",
                    flag_values=fv)
  flags.DEFINE_integer("images_per_shard", 5000, "Images per shard.", flag_values=fv)
  flags.DEFINE_list("splits", [], "Splits to convert (default: all).", flag_values=fv)
  for name in ("data_dir", "image_root", "out"):
    flags.mark_flag_as_required(name, flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m itr_jax.data.image_records --data_dir=D --image_root=R --out=O`."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  args = cli.parse_own_flags(argv, _define_flags, usage=(
      "python -m itr_jax.data.image_records --data_dir=DIR --image_root=ROOT "
      "--out=OUT [--skip_corrupt]\nConverts image files to ArrayRecord shards."))
  try:
    manifest = convert(args.data_dir, args.out, image_root=args.image_root,
                       skip_corrupt=args.skip_corrupt,
                       images_per_shard=args.images_per_shard,
                       splits=args.splits or None)
  except ValueError as e:
    print(f"Error: {e}", file=sys.stderr)
    return 1
  for split, info in manifest["splits"].items():
    print(f"{split}: {info['images']} images, {info['captions']} captions, "
          f"{len(info['skipped'])} skipped")
  return 0


def run():
  """Console-script entry point (itr-image-records)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
