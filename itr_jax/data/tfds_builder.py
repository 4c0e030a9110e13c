"""TFDS builder ``itr_precomputed``: a precomputed ITR dataset as TFDS records.

Reads the precomputed format (``precomputed.py``) from the TFDS ``manual_dir``
and writes one record per image, in image order, so a large dataset is
validated and prepared once. Every split found there (``{split}_ims.npy`` +
``{split}_caps.txt``) is written under its own name. A record holds:

* ``image_id``: int32, the image index in its split (record i holds image i);
* ``image``: float32 ``[R, F]`` region features;
* ``captions``: the image's C captions (text; C = 5 or 1);
* ``caption_ids``: int32 ``[C]``, their line indices in ``{split}_caps.txt``;
* ``caption_emb``: float32 ``[C, D]`` sentence embeddings (``[C, 0]`` when
  the split has none);
* ``relevance``: float32 ``[N_captions]``, the image's row of
  ``{split}_relevance.npy`` (``[0]`` when the split has none).

The dataset's metadata (``metadata.json``) holds every split's captions, so
a reader tokenises them without reading the features; ``vocab.json`` of the
source folder, if any, is copied next to it. Training reads the ArrayRecord
format (random access, `tfds_source`; local or gs://); convert with

  python -m itr_jax.data.tfds_builder --data_dir=/path/to/f30k_precomp \
      --out=~/tensorflow_datasets   # or gs://bucket/tfds

or from Python:

  import tensorflow_datasets as tfds
  from itr_jax.data import tfds_builder  # registers "itr_precomputed"
  builder = tfds.builder("itr_precomputed", data_dir="~/tensorflow_datasets",
                         file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir="/path/to/f30k_precomp", try_download_gcs=False))
  ds = builder.as_data_source(split="train")  # ds[i]: image i's record
"""
from __future__ import annotations

import os
import sys
import tempfile

from absl import flags
from absl import logging
import numpy as np

from itr_jax import cli
from itr_jax import filesystem as fs
from itr_jax import optional
from itr_jax.data import precomputed

tfds = optional.require("tensorflow_datasets", "Building TFDS records (itr-build-tfds)",
                        "tensorflow-datasets")

VOCAB_FILE = "vocab.json"
INFO_FILE = "dataset_info.json"  # TFDS's mark of a prepared dataset

if __name__ == "__main__":  # python -m itr_jax.data.tfds_builder
  # TFDS finds a builder's files through its module's package, which
  # `__main__` lacks, and registers a name once: run this module as imported
  # under its own name (app.run exits), before `__main__` defines the class.
  from itr_jax.data import tfds_builder as _imported  # pylint: disable=import-self
  _imported.run()


class ItrPrecomputed(tfds.core.GeneratorBasedBuilder):
  """Precomputed image-text retrieval data (SCAN / VSE++ / Listwise_ITR)."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Records in image order; ground-truth relevance rows; every "
               "split's captions in the metadata.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put a dataset in the precomputed format in `manual_dir`: per split,
  `{split}_ims.npy` [N_images, R, F], `{split}_caps.txt` (5 or 1 captions per
  image), optionally `{split}_caps_emb.npy` [N_captions, D] and
  `{split}_relevance.npy` [N_images, N_captions]. E.g. SCAN's
  `data/f30k_precomp`, or `python -m itr_jax.data.synthetic_scenes --out_dir`.
  """

  # TFDS prints "Downloading and preparing dataset Unknown size ..." and a
  # "downloaded and prepared" line on stdout; nothing is downloaded here, and
  # itr-build-tfds prints where it wrote. Kept for --verbose (absl INFO).
  def _log_download_bytes(self) -> None:
    logging.info("Preparing %s in %s", self.name, self.data_dir)

  def _log_download_done(self) -> None:
    logging.info("Prepared %s in %s", self.name, self.data_dir)

  def _info(self) -> tfds.core.DatasetInfo:
    # R, F, C and D differ between datasets: dynamic shapes, stored as bytes.
    # The optional ones as zlib: TFDS's NumPy decoding (tfds.data_source)
    # loses the shape of an empty bytes value, never of a compressed one.
    def floats(shape, encoding=tfds.features.Encoding.BYTES):
      return tfds.features.Tensor(shape=shape, dtype=np.float32,
                                  encoding=encoding)
    return self.dataset_info_from_configs(
        description="Precomputed region features, captions and caption "
                    "embeddings for image-text retrieval.",
        features=tfds.features.FeaturesDict({
            "image_id": tfds.features.Scalar(dtype=np.int32),
            "image": floats((None, None)),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "caption_ids": tfds.features.Tensor(shape=(None,),
                                                dtype=np.int32),
            "caption_emb": floats((None, None), tfds.features.Encoding.ZLIB),
            "relevance": floats((None,), tfds.features.Encoding.ZLIB),
        }),
        supervised_keys=None,
        # Record i is image i: random access by image index (exact resume).
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    data_dir = str(dl_manager.manual_dir)
    splits = precomputed.available_splits(data_dir)
    if not splits:
      raise ValueError(f"no split (pair of {{split}}_ims.npy and "
                       f"{{split}}_caps.txt) in manual_dir {data_dir!r}")
    # Validate every split before writing anything.
    loaded = {s: precomputed.load_split(data_dir, s) for s in splits}
    self.info.metadata["splits"] = {
        s: {"captions": split.captions,
            "captions_per_image": split.captions_per_image}
        for s, split in loaded.items()}
    return {s: self._generate_examples(split) for s, split in loaded.items()}

  def _generate_examples(self, split: precomputed.PrecomputedSplit):
    # With disable_shuffling, TFDS orders records by key and spills them to
    # 1000 buckets by key / 2**128: keys 0..N-1 would all land in bucket 0,
    # which it then reads back whole (the entire dataset in memory). Keys
    # spread over [0, 2**128) keep the order and each bucket small.
    stride = 2**128 // max(split.num_images, 1)
    for i in range(split.num_images):
      ids = split.captions_of_image(i)
      emb = (np.zeros((len(ids), 0), np.float32) if split.caption_emb is None
             else np.asarray(split.caption_emb[ids], np.float32))
      rel = (np.zeros((0,), np.float32) if split.true_relevance is None
             else np.asarray(split.true_relevance[i], np.float32))
      yield i * stride, {"image_id": i,
                "image": np.asarray(split.images[i], np.float32),
                "captions": [split.captions[c] for c in ids],
                "caption_ids": ids.astype(np.int32),
                "caption_emb": emb,
                "relevance": rel}


def convert(data_dir: str, out: str, *, local_cache_dir: str = "") -> str:
  """Writes the precomputed folder `data_dir` as ArrayRecords under `out`.

  Returns the dataset's directory ``{out}/itr_precomputed/{VERSION}``.
  Raises ValueError if that version already exists there (nothing is
  overwritten) or if `data_dir` is not a valid precomputed folder (checked
  before anything is written). A `data_dir` on gs:// is first copied to
  `local_cache_dir` (`staging`; empty: ~/.cache/itr_jax/staged).
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  if fs.is_remote(data_dir):  # the .npy files are memory-mapped
    from itr_jax.data import staging  # pylint: disable=g-import-not-at-top
    files = [n for n in fs.listdir(data_dir) if fs.isfile(fs.join(data_dir, n))]
    data_dir = staging.stage_dir(data_dir, files, staging.cache_dir(local_cache_dir))
  src = epath.Path(data_dir)
  if not src.is_dir():
    raise ValueError(f"--data_dir={data_dir!r} is not a folder; pass the "
                     "folder holding {split}_ims.npy and {split}_caps.txt")
  if not precomputed.available_splits(data_dir):
    raise ValueError(
        f"--data_dir={data_dir!r} holds no split: expected pairs of "
        f"{{split}}_ims.npy and {{split}}_caps.txt, found "
        f"{sorted(p.name for p in src.iterdir())}")
  builder = ItrPrecomputed(data_dir=out, file_format="array_record")
  target = epath.Path(builder.data_dir)
  if target.exists():
    raise ValueError(
        f"{target} already exists: itr_precomputed {ItrPrecomputed.VERSION} "
        "is written once (a folder without dataset_info.json is an "
        "interrupted upload). Pass another --out, or delete that folder first.")
  if not fs.is_remote(out):
    _prepare(builder, src)
    return str(target)
  # The open-source ArrayRecord writer opens local files only: write into a
  # local temporary folder ($TMPDIR), then upload.
  with tempfile.TemporaryDirectory(prefix="itr_tfds_") as local_out:
    local = ItrPrecomputed(data_dir=local_out, file_format="array_record")
    _prepare(local, src)
    _upload(str(local.data_dir), str(target))
  return str(target)


def _prepare(builder: ItrPrecomputed, src) -> None:
  from etils import epath  # pylint: disable=g-import-not-at-top
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(src), try_download_gcs=False))
  if (src / VOCAB_FILE).exists():  # word ids the dataset's runs share
    (src / VOCAB_FILE).copy(epath.Path(builder.data_dir) / VOCAB_FILE)


def _upload(local_dir: str, target: str) -> None:
  """Copies `local_dir`'s files to `target`, dataset_info.json last: TFDS
  sees a dataset as prepared once that file exists, so an interrupted upload
  is never read as a dataset."""
  from itr_jax.progress import ProgressBar  # pylint: disable=g-import-not-at-top
  names = sorted(fs.walk_files(local_dir), key=lambda n: n == INFO_FILE)
  for name in ProgressBar(names, desc=f"uploading to {target}", unit="file"):
    fs.copy(os.path.join(local_dir, name), fs.join(target, name))


def main(argv):
  v = cli.flag_values(argv, {n: flags.FLAGS[n] for n in ("data_dir", "out", "local_cache_dir")},
                      required=["data_dir", "out"])
  if not sys.stderr.isatty():  # TFDS's bars redraw with cursor codes: not in logs
    tfds.disable_progress_bar()
  # A bad folder or an existing version: ValueError, one readable line.
  print(f"wrote {convert(v['data_dir'], v['out'], local_cache_dir=v['local_cache_dir'])}")


def run():
  """Console-script entry point (``itr-build-tfds``)."""
  # Defined here, not on import: the library modules that import this one
  # (tfds_source) run inside tools with their own --data_dir.
  flags.DEFINE_string(
      "data_dir", None, "Precomputed dataset folder ({split}_ims.npy, "
      "{split}_caps.txt, optional {split}_caps_emb.npy / _relevance.npy); "
      "local or gs:// (copied to --local_cache_dir first).")
  flags.DEFINE_string(
      "local_cache_dir", "", "Local folder a gs:// --data_dir is copied to "
      "(default ~/.cache/itr_jax/staged).")
  flags.DEFINE_string(
      "out", None, "TFDS data dir to write itr_precomputed/<version> into "
      "(a local folder, or gs://: written in $TMPDIR, then uploaded); then "
      "train with --config.data.name=tfds "
      "--config.data.tfds_data_dir=<this>.")
  cli.run(main)

