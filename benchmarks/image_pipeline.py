"""Image pipeline throughput: decoded images/s, per CPU core, and peak memory.

Writes ``--num_images`` JPEGs of 500 x 375 pixels (Flickr30K's typical size;
smooth colour fields plus noise, ~60 KB each at quality 90) with five
captions each, as a raw-image dataset (``train_images.txt``) and as
ArrayRecord shards (`itr_jax.data.image_records`), then for each output size
(224, 384), source (files, records) and transform (training: random resized
crop + flip; evaluation: resize + center crop) runs `pipeline.train_batches`
(B = ``--batch_size``, the training or the evaluation transform) in a fresh
process and reports:

* images/s: decoded, cropped, resized, normalised images per second of wall
  time, after ``--warmup`` batches;
* per core: images per second of the process's CPU time (user + system), i.e.
  what one fully busy core delivers; wall throughput scales with the cores
  tf.data gets;
* peak RSS (MiB): the process's high-water mark (``ru_maxrss``), including
  the Python/TensorFlow runtime (~0.6 GB before any image).

  python benchmarks/image_pipeline.py [--num_images=512] [--batch_size=64]
      [--batches=20] [--sizes=224,384]

Prints a Markdown table and the 1-minute load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_dataset(directory: str, num_images: int) -> tuple[str, str, str]:
  """(dataset folder, image root, records folder) of `num_images` JPEGs."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from itr_jax.data import image_records  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  images = os.path.join(directory, "images")
  os.makedirs(images)
  yy, xx = np.mgrid[0:375, 0:500] / 100.0
  names = []
  for i in range(num_images):
    phase = rng.uniform(0, 6, 3)
    field = 127 + 80 * np.sin(xx[..., None] * (1 + phase) + yy[..., None] * phase)
    pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
    names.append(f"{i:06d}.jpg")
    Image.fromarray(pixels).save(os.path.join(images, names[-1]), quality=90)
  data = os.path.join(directory, "data")
  os.makedirs(data)
  with open(os.path.join(data, "train_images.txt"), "w") as f:
    f.write("".join(n + "\n" for n in names))
  with open(os.path.join(data, "train_caps.txt"), "w") as f:
    f.write("".join(f"a picture number {i} view {c}\n"
                    for i in range(num_images) for c in range(5)))
  records = os.path.join(directory, "records")
  image_records.convert(data, records, image_root=images)
  return data, images, records


def measure(args) -> dict:
  """One configuration, in this (fresh) process."""
  from itr_jax.data import image_preprocessing  # pylint: disable=import-outside-toplevel
  from itr_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from itr_jax.data import precomputed  # pylint: disable=import-outside-toplevel
  from itr_jax.data import vocab as vocab_lib  # pylint: disable=import-outside-toplevel
  train = args.transform == "train"
  options = image_preprocessing.ImagePreprocessing(
      size=args.size, crop="random_resized" if train else "center", flip=train)
  directory = args.records if args.source == "records" else args.data
  split = precomputed.load_split(directory, "train", image_root=args.images,
                                 preprocessing=options)
  vocab = vocab_lib.Vocabulary.build(split.captions)
  # crop="center" without flip is the evaluation transform.
  batches = pipeline.train_batches(
      split, vocab, batch_size=args.batch_size, seed=0, max_len=16,
      process_index=0, process_count=1, prefetch=2)
  for _ in range(args.warmup):
    next(batches)
  cpu0, wall0 = os.times(), time.perf_counter()
  for _ in range(args.batches):
    batch = next(batches)
  wall = time.perf_counter() - wall0
  cpu1 = os.times()
  cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
  assert batch["images"].shape == (args.batch_size, args.size, args.size, 3)
  n = args.batches * args.batch_size
  batches.close()
  return {"images_per_s": n / wall, "per_core": n / cpu, "cpu_s": cpu,
          "wall_s": wall,
          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--sizes", default="224,384")
  parser.add_argument("--sources", default="files,records")
  # Internal: one measurement in a child process.
  parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--size", type=int)
  parser.add_argument("--source")
  parser.add_argument("--transform")
  parser.add_argument("--data")
  parser.add_argument("--images")
  parser.add_argument("--records")
  args = parser.parse_args()
  if args.one:
    print(json.dumps(measure(args)))
    return
  with tempfile.TemporaryDirectory(prefix="itr_image_bench_") as tmp:
    t = time.perf_counter()
    data, images, records = make_dataset(tmp, args.num_images)
    print(f"wrote {args.num_images} JPEGs 500x375 + records in "
          f"{time.perf_counter() - t:.1f} s; load average {os.getloadavg()[0]:.2f}; "
          f"{len(os.sched_getaffinity(0))} CPUs available", flush=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
      for source in args.sources.split(","):
        for transform in ("train", "eval"):
          cmd = [sys.executable, __file__, "--one", f"--size={size}",
                 f"--source={source}", f"--transform={transform}",
                 f"--data={data}", f"--images={images}", f"--records={records}",
                 f"--batch_size={args.batch_size}", f"--batches={args.batches}",
                 f"--warmup={args.warmup}"]
          load = os.getloadavg()[0]
          out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": ROOT,
                                    "TF_CPP_MIN_LOG_LEVEL": "2"})
          result = json.loads(out.stdout.strip().splitlines()[-1])
          rows.append((size, source, transform, result, load))
          print(f"  {size} {source} {transform}: {result}", flush=True)
  print("\n| size | source | transform | images/s | images/s per core | peak RSS MiB | load |")
  print("|---:|---|---|---:|---:|---:|---:|")
  for size, source, transform, r, load in rows:
    name = ("random resized crop + flip" if transform == "train"
            else "resize + center crop")
    print(f"| {size} | {source} | {name} | {r['images_per_s']:.0f} | "
          f"{r['per_core']:.0f} | {r['peak_rss_mib']:.0f} | {load:.1f} |")
  print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
