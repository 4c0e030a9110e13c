"""Data on gs://: staging a .npy file vs reading a batch's rows remotely.

Against the local Cloud Storage emulator of the tests (fake-gcs-server behind
a Python TLS proxy, tests/gcs_emulator.py), so the absolute numbers are this
machine's loopback + proxy, not Cloud Storage's; the ratios say which design
fits training. Writes a ``[N, 36, 2048]`` float32 feature file (288 KB a row,
the Flickr30K layout) and its TFDS records, uploads both, then times:

* staging the file to a local cache (`itr_jax.data.staging`: download +
  CRC32C check), and re-using the staged copy at the next start;
* one training batch of B rows (random images) read remotely, row by row
  with ``tf.io.gfile`` seek + read (what range reads through the layer would
  do), sequentially and with a thread pool;
* the same batch from the TFDS records on gs:// (ArrayRecord's own GCS
  reader, `tfds_source`), and from the staged memory-mapped copy.

  python benchmarks/gcs_data.py --num_images=1000 --batch_size=128
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from gcs_emulator import GcsEmulator  # pylint: disable=wrong-import-position
from itr_jax import filesystem as fs  # pylint: disable=wrong-import-position
from itr_jax.data import staging, testing, tfds_builder, tfds_source  # pylint: disable=wrong-import-position


def _timed(fn, repeat=3):
  """(best seconds of `repeat` calls, last result)."""
  best, out = float("inf"), None
  for _ in range(repeat):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def _range_read_rows(url: str, ids: np.ndarray, workers: int) -> np.ndarray:
  """Rows `ids` of the .npy at `url` via gfile seek + read, one request a row."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  with tf.io.gfile.GFile(url, "rb") as f:
    major, _ = np.lib.format.read_magic(f)
    read_header = (np.lib.format.read_array_header_1_0 if major == 1
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(f)
    offset = f.tell()
  row_bytes = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize

  def row(i):
    with tf.io.gfile.GFile(url, "rb") as f:
      f.seek(offset + int(i) * row_bytes)
      return np.frombuffer(f.read(row_bytes), dtype).reshape(shape[1:])

  if workers == 1:
    return np.stack([row(i) for i in ids])
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return np.stack(list(pool.map(row, ids)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=1000)
  parser.add_argument("--batch_size", type=int, default=128)
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix="gcs_data_bench_")
  src = os.path.join(root, "src")
  testing.write_random_split(src, "train", num_images=args.num_images,
                             regions=36, feature_dim=2048, emb_dim=8)
  local_tfds = tfds_builder.convert(src, os.path.join(root, "tfds"))
  size = os.path.getsize(os.path.join(src, "train_ims.npy"))
  ids = np.sort(np.random.default_rng(0).choice(args.num_images, args.batch_size,
                                                replace=False))
  batch_mb = args.batch_size * size / args.num_images / 1e6
  rows = []
  def upload(path, url):  # google-cloud-storage: 10x faster than gfile here
    fs._gcs_blob(url).upload_from_filename(path)  # pylint: disable=protected-access

  with GcsEmulator() as gcs:
    url = f"gs://{gcs.bucket}/src/train_ims.npy"
    upload(os.path.join(src, "train_ims.npy"), url)
    tfds_url = f"gs://{gcs.bucket}/tfds/" + os.path.relpath(local_tfds, os.path.join(root, "tfds"))
    for name in fs.walk_files(local_tfds):
      upload(os.path.join(local_tfds, name), fs.join(tfds_url, name))
    print("uploaded", flush=True)
    cache = os.path.join(root, "cache")
    start = time.perf_counter()
    staged = staging.stage(url, cache)
    seconds = time.perf_counter() - start
    rows.append(("stage the file (download + CRC32C)", seconds, size / 1e6 / seconds))
    seconds, _ = _timed(lambda: staging.stage(url, cache))
    rows.append(("re-use the staged copy (next start)", seconds, float("nan")))
    expected = np.load(staged, mmap_mode="r")[ids]
    for workers in (1, 16):
      seconds, got = _timed(lambda w=workers: _range_read_rows(url, ids, w))
      np.testing.assert_array_equal(got, expected)
      rows.append((f"batch by gfile range reads, {workers} thread(s)", seconds,
                   batch_mb / seconds))
    split = tfds_source.load_split("itr_precomputed", os.path.dirname(os.path.dirname(tfds_url)), "train")
    seconds, got = _timed(lambda: split.images[ids], repeat=1)  # no LRU hits
    np.testing.assert_array_equal(got, expected)
    rows.append(("batch from TFDS records on gs://", seconds, batch_mb / seconds))
  memmap = np.load(staged, mmap_mode="r")
  seconds, _ = _timed(lambda: np.asarray(memmap[ids]))
  rows.append(("batch from the staged copy (memmap, warm)", seconds, batch_mb / seconds))
  print(f"\n{args.num_images} images x 36 x 2048 float32 ({size / 1e6:.0f} MB), "
        f"batch of {args.batch_size} rows ({batch_mb:.1f} MB)\n")
  print(f"| {'operation':<44} | {'seconds':>8} | {'MB/s':>7} |")
  print(f"|{'-' * 46}|{'-' * 9}:|{'-' * 8}:|")
  for name, seconds, rate in rows:
    print(f"| {name:<44} | {seconds:8.3f} | {rate:7.0f} |")
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
