"""Input at full dataset scale: start-up, input samples/s, train steps/s, memory.

Builds a Flickr30K-size training split (29,000 images x 36 regions x 2048
float32 features = 8.55 GB, 145,000 captions with 768-d caption embeddings)
in a temporary folder, streaming (never whole in memory), as ``.npy`` files
and as ``itr_precomputed`` ArrayRecords (`itr_jax.data.tfds_builder`), and
reports for this host (one process, or process 0 of ``--processes``):

* start-up: opening the split (``.npy``: with the NaN/Inf scan the first
  time, trusting its `check_record` record the second) and tokenising the
  captions up to the first batch; both starts with a cold page cache;
* samples/s of the input pipeline alone (`pipeline.train_batches`, B=128),
  cold and warm page cache. Cold: every data file is fsync'ed and dropped
  from the page cache with ``os.posix_fadvise(fd, 0, 0,
  POSIX_FADV_DONTNEED)`` (no root needed) before the split is opened; the
  "resident" column is the share of the data files in the page cache at the
  start (``mincore``), so a failed drop is visible;
* steps/s of the paper-config VSE++ train step (36 x 2048 regions, GRU 1024,
  RSC + triplet + S-NDCG, Adam) fed by that pipeline, next to the step alone
  on a batch already on the device;
* peak anonymous (private) RSS while iterating: what the process holds
  itself, apart from file pages the kernel can drop. It stays at tens of MiB
  whatever the dataset size: features are never loaded whole, so COCO
  (113,287 images, 33 GB) trains in 24 GiB (`--scale=coco` writes it, if the
  disk has room).

The data are random (a 512-image random block repeated; captions of random
words). The folder needs 2x the dataset size free (TFDS spills its write
buffer to disk; the check refuses otherwise) and is deleted at the end
unless ``--keep``.

  python benchmarks/input_pipeline.py                  # Flickr30K size
  python benchmarks/input_pipeline.py --num_images=2000 --train_steps=0
  python benchmarks/input_pipeline.py --scale=coco --formats=npy
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from itr_jax.data import pipeline
from itr_jax.data import precomputed
from itr_jax.data import tfds_builder
from itr_jax.data import tfds_source
from itr_jax.data import vocab as vocab_lib

SCALES = {"f30k": 29_000, "coco": 113_287}
GB = 1e9
VOCAB = "vocab.json"
_WORDS = [f"w{i}" for i in range(8000)]


def write_dataset(out: str, num_images: int, args) -> None:
  """Writes train_{ims,caps_emb}.npy and train_caps.txt chunk by chunk."""
  os.makedirs(out)
  rng = np.random.default_rng(0)
  block = rng.standard_normal((512, args.regions, args.feature_dim),
                              np.float32)
  ims = np.lib.format.open_memmap(
      os.path.join(out, "train_ims.npy"), mode="w+", dtype=np.float32,
      shape=(num_images, args.regions, args.feature_dim))
  for start in range(0, num_images, len(block)):
    stop = min(start + len(block), num_images)
    ims[start:stop] = block[:stop - start]
  ims.flush()
  del ims
  n_caps = 5 * num_images
  emb = np.lib.format.open_memmap(
      os.path.join(out, "train_caps_emb.npy"), mode="w+", dtype=np.float32,
      shape=(n_caps, args.emb_dim))
  for start in range(0, n_caps, 20_000):
    stop = min(start + 20_000, n_caps)
    emb[start:stop] = rng.standard_normal((stop - start, args.emb_dim),
                                          np.float32)
  emb.flush()
  del emb
  with open(os.path.join(out, "train_caps.txt"), "w", encoding="utf-8") as f:
    for start in range(0, n_caps, 20_000):
      lengths = rng.integers(8, 16, min(20_000, n_caps - start))
      words = rng.choice(_WORDS, (len(lengths), 16))
      f.writelines(" ".join(w[:n]) + "\n" for w, n in zip(words, lengths))


def data_files(fmt: str, root: str) -> list[str]:
  if fmt == "npy":
    return sorted(glob.glob(os.path.join(root, "npy", "*.npy")))
  return sorted(glob.glob(os.path.join(root, "tfds", "itr_precomputed", "*",
                                       "*.array_record*")))


def drop_page_cache(paths: list[str]) -> None:
  """Evicts `paths` from the page cache (fsync first: dirty pages stay)."""
  for path in paths:
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
      os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
      os.close(fd)


def resident_fraction(paths: list[str]) -> float:
  """Share of the bytes of `paths` in the page cache (mincore(2))."""
  libc = ctypes.CDLL(None, use_errno=True)
  page = mmap.PAGESIZE
  resident = total = 0
  for path in paths:
    size = os.path.getsize(path)
    if not size:
      continue
    with open(path, "rb") as f:
      mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    pages = (size + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    anchor = ctypes.c_char.from_buffer(mapped)
    if libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)),
                    ctypes.c_size_t(size), vec) != 0:
      raise OSError(ctypes.get_errno(), "mincore failed")
    del anchor
    mapped.close()
    resident += sum(v & 1 for v in vec)
    total += pages
  return resident / max(total, 1)


class PeakRss:
  """Samples RssAnon / RssFile of this process every 20 ms while active."""

  def __init__(self):
    self.anon = self.file = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  @staticmethod
  def now() -> tuple[int, int]:
    fields = {}
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith(("RssAnon:", "RssFile:")):
          key, value = line.split(":")
          fields[key] = int(value.split()[0]) * 1024
    return fields["RssAnon"], fields["RssFile"]

  def _run(self):
    while not self._stop.is_set():
      anon, file = self.now()
      self.anon, self.file = max(self.anon, anon), max(self.file, file)
      time.sleep(0.02)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def open_split(fmt: str, root: str):
  if fmt == "npy":
    return precomputed.load_split(os.path.join(root, "npy"), "train")
  return tfds_source.load_split("itr_precomputed", os.path.join(root, "tfds"),
                                "train")


def start_up(fmt: str, root: str, vocab, args) -> dict:
  """Seconds to open the split and to its first batch."""
  t0 = time.perf_counter()
  split = open_split(fmt, root)
  opened = time.perf_counter() - t0
  batches = pipeline.train_batches(split, vocab, batch_size=args.batch_size,
                                   seed=0, max_len=args.max_len, num_steps=1,
                                   process_index=0, process_count=1)
  next(batches)
  return {"open_s": opened, "first_batch_s": time.perf_counter() - t0}


def input_rate(fmt: str, root: str, vocab, args) -> dict:
  """Samples/s of this process's share of `args.steps` global batches."""
  split = open_split(fmt, root)
  with PeakRss() as rss:
    batches = pipeline.train_batches(
        split, vocab, batch_size=args.batch_size, seed=1, max_len=args.max_len,
        num_steps=args.steps + 1, process_index=0,
        process_count=args.processes)
    next(batches)  # tokenising the captions is start-up, not throughput
    before = PeakRss.now()[0]
    t0 = time.perf_counter()
    rows = sum(len(b["mask"]) for b in batches)
    seconds = time.perf_counter() - t0
  return {"samples_s": rows / seconds, "rss_anon_before": before,
          "rss_anon": rss.anon, "rss_file": rss.file}


def paper_train_step(vocab_size: int, batch: dict):
  """(jitted step, state): the paper's VSE++ config, as the trainer builds it."""
  import jax  # pylint: disable=g-import-not-at-top
  from itr_jax import models  # pylint: disable=g-import-not-at-top
  from itr_jax.training import defaults, optimizer  # pylint: disable=g-import-not-at-top
  from itr_jax.training import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  config = defaults.base_config()
  config.model.vocab_size = vocab_size
  model = models.create_model(config.model)
  params = jax.jit(model.init)(jax.random.key(0), batch["images"],
                               batch["tokens"], batch["lengths"])["params"]
  state = train_step_lib.TrainState.create(
      apply_fn=model.apply, params=params,
      tx=optimizer.create_optimizer(config.optim, steps_per_epoch=1000))
  return train_step_lib.make_train_step(model, config.loss), state


def train_rate(fmt: str, root: str, vocab, args) -> dict:
  """Steps/s of the train step fed by the pipeline, and of the step alone."""
  import jax  # pylint: disable=g-import-not-at-top
  split = open_split(fmt, root)
  batches = pipeline.train_batches(
      split, vocab, batch_size=args.batch_size, seed=2, max_len=args.max_len,
      num_steps=args.train_steps + 1, process_index=0, process_count=1)
  first = jax.device_put(next(batches))
  step, state = paper_train_step(len(vocab), first)
  state, metrics = step(state, first)  # compiles
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(args.train_steps):
    state, metrics = step(state, first)
  jax.block_until_ready(metrics)
  alone = args.train_steps / (time.perf_counter() - t0)
  t0, steps = time.perf_counter(), 0
  for batch in batches:
    state, metrics = step(state, jax.device_put(batch))
    steps += 1
  jax.block_until_ready(metrics)
  fed = steps / (time.perf_counter() - t0)
  batches.close()
  return {"alone_steps_s": alone, "fed_steps_s": fed}


def measure(args) -> dict:
  """One measurement in this (fresh) process: see `main`."""
  vocab = vocab_lib.Vocabulary.load(os.path.join(args.root, "npy", VOCAB))
  if args.measure == "start":
    return start_up(args.fmt, args.root, vocab, args)
  if args.measure == "input":
    args.processes = int(args.processes)
    return input_rate(args.fmt, args.root, vocab, args)
  return train_rate(args.fmt, args.root, vocab, args)


def run_fresh(kind: str, fmt: str, root: str, args, *, cold: bool = True,
              processes: int = 1) -> dict:
  """Runs `measure` in a new process (its own memory maps and RSS), after
  dropping the data from the page cache if `cold`."""
  files = data_files(fmt, root)
  if cold:
    drop_page_cache(files)
  resident = resident_fraction(files)
  command = [sys.executable, __file__, f"--measure={kind}", f"--fmt={fmt}",
             f"--root={root}", f"--processes={processes}"] + [
                 f"--{k}={getattr(args, k)}" for k in (
                     "batch_size", "steps", "train_steps", "max_len")]
  proc = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{kind} {fmt} failed:\n{proc.stderr[-3000:]}")
  result = {**json.loads(lines[-1][len("RESULT "):]), "resident": resident}
  print(f"{kind} {fmt} processes={processes} cold={cold}: {result}",
        flush=True)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--scale", choices=tuple(SCALES), default="f30k")
  parser.add_argument("--num_images", type=int, default=0,
                      help="override the scale's image count")
  parser.add_argument("--formats", default="npy,tfds")
  parser.add_argument("--processes", default="1,4", type=str,
                      help="input rate as process 0 of each count (its share "
                      "of every global batch)")
  parser.add_argument("--dir", default=tempfile.gettempdir(),
                      help="where to write the temporary dataset")
  parser.add_argument("--keep", action="store_true",
                      help="keep the dataset (its path is printed)")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=100,
                      help="global batches timed for the input rate")
  parser.add_argument("--train_steps", type=int, default=5,
                      help="train steps timed (0: skip the train step)")
  parser.add_argument("--regions", type=int, default=36)
  parser.add_argument("--feature_dim", type=int, default=2048)
  parser.add_argument("--emb_dim", type=int, default=768)
  parser.add_argument("--max_len", type=int, default=32)
  parser.add_argument("--measure", choices=("start", "input", "train"),
                      help=argparse.SUPPRESS)  # child process mode
  parser.add_argument("--fmt", help=argparse.SUPPRESS)
  parser.add_argument("--root", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure:
    print("RESULT " + json.dumps(measure(args)))
    return
  formats = args.formats.split(",")
  num_images = args.num_images or SCALES[args.scale]
  size = num_images * 4 * (args.regions * args.feature_dim + 5 * args.emb_dim)
  need = 2 * size * len(formats)  # TFDS also spills its write buffer
  free = shutil.disk_usage(args.dir).free
  print(f"dataset: {num_images} images, {5 * num_images} captions, "
        f"{size / GB:.2f} GB per format; {free / GB:.0f} GB free in "
        f"{args.dir}, {need / GB:.0f} GB needed")
  if free < need:
    raise SystemExit(f"refusing: {args.dir} has {free / GB:.1f} GB free, "
                     f"{need / GB:.1f} GB needed (2x the data written)")
  root = tempfile.mkdtemp(prefix="itr_input_bench_", dir=args.dir)
  rows = []
  try:
    t0 = time.perf_counter()
    write_dataset(os.path.join(root, "npy"), num_images, args)
    print(f"wrote .npy in {time.perf_counter() - t0:.0f} s")
    vocab_lib.Vocabulary.build(precomputed.read_captions(
        os.path.join(root, "npy", "train_caps.txt"))).save(
            os.path.join(root, "npy", VOCAB))
    for fmt in formats:
      if fmt == "tfds":
        t0 = time.perf_counter()
        tfds_builder.convert(os.path.join(root, "npy"),
                             os.path.join(root, "tfds"))
        print(f"converted to ArrayRecords in {time.perf_counter() - t0:.0f} s")
      starts = [run_fresh("start", fmt, root, args) for _ in range(2)]
      rates = {(p, cold): run_fresh("input", fmt, root, args, cold=cold,
                                    processes=p)
               for p in (int(x) for x in args.processes.split(","))
               for cold in (True, False)}
      train = (run_fresh("train", fmt, root, args, cold=False)
               if args.train_steps else {})
      rows.append((fmt, starts, rates, train))
      print(f"measured {fmt}", flush=True)
  finally:
    if args.keep:
      print(f"kept {root}")
    else:
      shutil.rmtree(root)

  print(f"\nB={args.batch_size}, {num_images} images x {args.regions} x "
        f"{args.feature_dim}, one host:")
  print("| format | 1st start: open / 1st batch (s) | 2nd start (s) "
        "| processes | cache | resident | input samples/s "
        "| RssAnon at start / peak; peak RssFile (MiB) |")
  print("|---|---|---|---|---|---|---|---|")
  for fmt, starts, rates, _ in rows:
    for (p, cold), r in rates.items():
      print(f"| {fmt} | {starts[0]['open_s']:.1f} / "
            f"{starts[0]['first_batch_s']:.1f} | {starts[1]['open_s']:.1f} / "
            f"{starts[1]['first_batch_s']:.1f} | {p} | "
            f"{'cold' if cold else 'warm'} | {100 * r['resident']:.0f}% | "
            f"{r['samples_s']:.0f} | {r['rss_anon_before'] / 2**20:.0f} / "
            f"{r['rss_anon'] / 2**20:.0f} / {r['rss_file'] / 2**20:.0f} |")
  if args.train_steps:
    print("\n| format | train step alone (steps/s) | fed by the pipeline "
          "(steps/s) |")
    print("|---|---|---|")
    for fmt, _, _, train in rows:
      print(f"| {fmt} | {train['alone_steps_s']:.2f} | "
            f"{train['fed_steps_s']:.2f} |")


if __name__ == "__main__":
  main()
