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

A prepared TFDS captions dataset is converted the same way:
``--tfds_name=coco_captions [--tfds_data_dir=DIR] [--restval]`` maps its
Karpathy splits train / val / test (+ restval) to train / dev / test, keeps
each image's encoded bytes and its first five captions in the dataset's order
(the convention of the Karpathy JSON path), and the image's
``image/filename`` as its path.

Nothing is written into ``out`` until every image has been checked; an
existing non-empty ``out`` is refused. Train from it with
``--config.data.name=images --config.data.data_dir=OUT``.
"""
from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import os
import shutil
import sys
import tempfile
from typing import Sequence


from itr_jax import filesystem as fs
from itr_jax.data import image_sources
from itr_jax.data import precomputed

MANIFEST = "image_records.json"
FORMAT = "itr_jax.image_records/1"
VOCAB_FILE = "vocab.json"
CAPTIONS_PER_IMAGE = 5


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


def _split_plan(data_dir: str, split: str, image_root: str) -> dict:
  """A split of image files: its images (path, captions, bytes reader)."""
  paths = image_sources.read_image_list(
      os.path.join(data_dir, split + image_sources.IMAGES_SUFFIX))
  captions = precomputed.read_captions(os.path.join(data_dir, f"{split}_caps.txt"))
  per = precomputed.captions_per_image(len(paths), len(captions),
                                       what=f"split {split!r}")
  items = ((p, captions[i * per:(i + 1) * per],
            functools.partial(image_sources.read_bounded, fs.join(image_root, p)))
           for i, p in enumerate(paths))
  return {"items": items, "count": len(paths), "per": per, "source_dir": data_dir}


def _tfds_plans(name: str, tfds_data_dir: str | None, *, restval: bool) -> dict:
  """The splits of a prepared TFDS captions dataset (``coco_captions``:
  Karpathy's train / val / test / restval) as conversion plans; images
  keep their encoded bytes (not decoded by TFDS)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=tfds_data_dir or None)
  except Exception as e:  # DatasetNotFoundError and friends
    raise ValueError(f"no TFDS dataset {name!r}: {e}") from e
  if not builder.is_prepared():
    raise ValueError(
        f"TFDS dataset {name!r} is not prepared in {str(builder.data_dir)!r}: "
        "prepare it first (tfds build coco_captions --data_dir=...; COCO "
        "needs the 2014 images and annotations), or pass --tfds_data_dir")
  wanted = {"train": ["train"] + (["restval"] if restval else []),
            "dev": ["val"], "test": ["test"]}
  available = set(builder.info.splits)
  plans = {}
  for split, sources in wanted.items():
    sources = [s for s in sources if s in available]
    if not sources:
      continue
    count = sum(builder.info.splits[s].num_examples for s in sources)
    dataset = builder.as_dataset(
        split="+".join(sources), shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()})

    def items(dataset=dataset):
      for example in dataset.as_numpy_iterator():
        path = example["image/filename"].decode("utf-8")
        texts = [t.decode("utf-8") for t in example["captions"]["text"]]
        if len(texts) < CAPTIONS_PER_IMAGE:
          raise ValueError(f"{name} image {path!r} has {len(texts)} captions; "
                           f"every image needs {CAPTIONS_PER_IMAGE}")
        # First five, in the dataset's order (as the Karpathy JSON path).
        captions = [" ".join(t.split()) for t in texts[:CAPTIONS_PER_IMAGE]]
        yield path, captions, functools.partial(lambda b: b, example["image"])
    plans[split] = {"items": items(), "count": count, "per": CAPTIONS_PER_IMAGE,
                    "source_dir": None}
  if not plans:
    raise ValueError(f"TFDS dataset {name!r} has none of the splits "
                     f"train / val / test (found {sorted(available)})")
  return plans


def _write_split(tmp: str, split: str, plan: dict, skip_corrupt: bool,
                 images_per_shard: int, workers: int) -> dict:
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from itr_jax.progress import ProgressBar  # pylint: disable=g-import-not-at-top
  count, per = plan["count"], plan["per"]
  num_shards = max(1, -(-count // images_per_shard))
  writers = [array_record_module.ArrayRecordWriter(
      os.path.join(tmp, f"{split}-{i:05d}-of-{num_shards:05d}.array_record"),
      "group_size:1") for i in range(num_shards)]
  kept, skipped, paths, captions = [], [], [], []

  def checked(item):
    path, _, fetch = item
    try:
      data = fetch()
      image_sources.check_image(data, path)
      return data, None
    except ValueError as e:
      if not skip_corrupt:
        raise
      return None, str(e)

  try:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool, ProgressBar(
        total=count, desc=f"{split} images", disable=count <= 256) as bar:
      # Ordered, in chunks: at most `chunk` images in memory at once.
      chunk = 4 * workers
      items = iter(plan["items"])
      j = 0
      while block := list(itertools.islice(items, chunk)):
        for item, (data, error) in zip(block, pool.map(checked, block)):
          path, caps, _ = item
          if error is not None:
            skipped.append({"path": path, "error": error})
          else:
            ids = list(range(j * per, (j + 1) * per))
            # Contiguous blocks of images per shard: record i is image i.
            writers[min(j * num_shards // count, num_shards - 1)].write(
                encode_record(data, path, caps, ids))
            kept.append(j)
            paths.append(path)
            captions.extend(caps)
          j += 1
        bar.update(len(block))
  finally:
    for w in writers:
      w.close()
  return {"kept": kept, "skipped": skipped, "paths": paths, "captions": captions}


def convert(data_dir: str | None, out: str, *, image_root: str = "",
            skip_corrupt: bool = False, images_per_shard: int = 5000,
            splits: Sequence[str] | None = None, workers: int = 8,
            tfds_name: str = "", tfds_data_dir: str = "",
            restval: bool = False) -> dict:
  """Writes ArrayRecord shards of `data_dir`'s splits (image files under
  `image_root`), or of the prepared TFDS dataset `tfds_name` (e.g.
  "coco_captions"; `restval` joins its restval split to train), into `out`;
  returns the manifest. ValueError (nothing written to `out`) on a bad
  source, an existing non-empty `out`, or a corrupt image without
  `skip_corrupt`."""
  if images_per_shard < 1:
    raise ValueError(f"images_per_shard must be >= 1, got {images_per_shard}")
  if fs.exists(out) and (not fs.isdir(out) or fs.listdir(out)):
    raise ValueError(f"--out={out!r} exists and is not an empty folder; pass a "
                     "new folder (nothing is overwritten)")
  if bool(tfds_name) == bool(data_dir):
    raise ValueError("pass either --data_dir (with --image_root) or --tfds_name")
  if tfds_name:
    plans = _tfds_plans(tfds_name, tfds_data_dir, restval=restval)
  else:
    if not image_root:
      raise ValueError("--image_root is required with --data_dir: the folder "
                       "the paths of {split}_images.txt are relative to")
    names = [s for s in precomputed.available_splits(data_dir) if os.path.exists(
        os.path.join(data_dir, s + image_sources.IMAGES_SUFFIX))]
    if not names:
      raise ValueError(f"--data_dir={data_dir!r} holds no split of image files: "
                       "expected {split}_images.txt with {split}_caps.txt "
                       "(python -m itr_jax.data.karpathy writes them)")
    plans = {s: _split_plan(data_dir, s, image_root) for s in names}  # checked first
  if splits:
    missing = sorted(set(splits) - set(plans))
    if missing:
      raise ValueError(f"no split {missing} to convert (found {sorted(plans)})")
    plans = {s: plans[s] for s in splits}
  manifest = {"format": FORMAT,
              "source": tfds_name or os.path.abspath(data_dir),
              "image_root": image_root, "splits": {}}
  with tempfile.TemporaryDirectory(prefix="itr_image_records_") as tmp:
    for split, plan in plans.items():
      result = _write_split(tmp, split, plan, skip_corrupt, images_per_shard,
                            workers)
      if not result["kept"]:
        raise ValueError(f"every image of split {split!r} is corrupt or missing")
      with open(os.path.join(tmp, f"{split}_caps.txt"), "w", encoding="utf-8") as f:
        f.write("".join(c + "\n" for c in result["captions"]))
      with open(os.path.join(tmp, split + image_sources.IMAGES_SUFFIX), "w",
                encoding="utf-8") as f:
        f.write("".join(p + "\n" for p in result["paths"]))
      source = plan["source_dir"]
      if source and not result["skipped"]:  # still aligned: carried over
        for name in (f"{split}_caps_emb.npy", f"{split}_caps_emb.json",
                     f"{split}_relevance.npy", f"{split}_image_ids.txt"):
          if os.path.exists(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), os.path.join(tmp, name))
      manifest["splits"][split] = {
          "images": len(result["kept"]), "captions": len(result["captions"]),
          "skipped": result["skipped"]}
    if data_dir and os.path.exists(os.path.join(data_dir, VOCAB_FILE)):
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
  flags.DEFINE_string("tfds_name", "", "Instead of --data_dir: a prepared TFDS "
                      "captions dataset, e.g. coco_captions (Karpathy splits).",
                      flag_values=fv)
  flags.DEFINE_string("tfds_data_dir", "", "Its TFDS data dir (default "
                      "~/tensorflow_datasets).", flag_values=fv)
  flags.DEFINE_bool("restval", False, "With --tfds_name: add the restval split "
                    "to train.", flag_values=fv)
  flags.mark_flag_as_required("out", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m itr_jax.data.image_records --data_dir=D --image_root=R --out=O`."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  args = cli.parse_own_flags(argv, _define_flags, usage=(
      "python -m itr_jax.data.image_records (--data_dir=DIR --image_root=ROOT | "
      "--tfds_name=coco_captions) --out=OUT [--skip_corrupt]\nConverts images "
      "and captions to ArrayRecord shards."))
  try:
    manifest = convert(args.data_dir, args.out, image_root=args.image_root or "",
                       skip_corrupt=args.skip_corrupt,
                       images_per_shard=args.images_per_shard,
                       splits=args.splits or None, tfds_name=args.tfds_name,
                       tfds_data_dir=args.tfds_data_dir, restval=args.restval)
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
