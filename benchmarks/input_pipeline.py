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
  itself, apart from file pages the kernel can drop; it does not grow with
  the dataset (features are never loaded whole);
* with ``--cli_steps=N``: also the dev and test splits (F30K: dev, test of
  1,000 images; COCO: dev, testall of 5,000), then the trainer CLI with the
  scale's paper config (``configs/{f30k,coco}_vse.py:sndcg``) until its dev
  evaluation at step N (then SIGTERM: it checkpoints and exits), then
  ``itr_jax.evaluate`` on the test split (COCO: 5-fold 1K and 5K), each
  process's peak RssAnon, smaps_rollup "Anonymous", VmHWM and RssFile
  sampled from /proc/<pid>.

``--scale=coco`` (113,287 images, 33.4 GB of features, 566,435 captions)
trains in 24 GiB of memory; with ``--formats=npy`` it needs only its own
size free on disk (38 GB with ``--cli_steps``); with the ArrayRecord copy
(``--formats=npy,tfds``) 4x its size, 140 GB. Every measurement prints the 1-minute load average around it.

The data are random (a 512-image random block repeated; captions of random
words). With TFDS the folder needs 2x the dataset size per format free (TFDS
spills its write buffer to disk; the check refuses otherwise). It is deleted
at the end unless ``--keep``; ``--reuse=DIR`` measures a kept one again.

  python benchmarks/input_pipeline.py                  # Flickr30K size
  python benchmarks/input_pipeline.py --num_images=2000 --train_steps=0
  python benchmarks/input_pipeline.py --scale=coco --formats=npy --cli_steps=36
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import json
import mmap
import os
import shutil
import signal
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
from itr_jax.training import reporting

# name: (train images, config, dev and test split names, images in each).
SCALES = {"f30k": (29_000, "f30k_vse.py", "dev", "test", 1_000),
          "coco": (113_287, "coco_vse.py", "dev", "testall", 5_000)}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GB = 1e9
VOCAB = "vocab.json"
_WORDS = [f"w{i}" for i in range(8000)]


def write_split(out: str, split: str, num_images: int, args,
                seed: int = 0) -> None:
  """Writes {split}_{ims,caps_emb}.npy and {split}_caps.txt chunk by chunk."""
  os.makedirs(out, exist_ok=True)
  rng = np.random.default_rng(seed)
  # One random block, repeated: generating 33 GB of normals would take the 2
  # cores longer than writing them; the reads measured are the same.
  block = rng.standard_normal((512, args.regions, args.feature_dim),
                              np.float32)
  ims = np.lib.format.open_memmap(
      os.path.join(out, f"{split}_ims.npy"), mode="w+", dtype=np.float32,
      shape=(num_images, args.regions, args.feature_dim))
  for start in range(0, num_images, len(block)):
    stop = min(start + len(block), num_images)
    ims[start:stop] = block[:stop - start]
  ims.flush()
  del ims
  n_caps = 5 * num_images
  emb = np.lib.format.open_memmap(
      os.path.join(out, f"{split}_caps_emb.npy"), mode="w+", dtype=np.float32,
      shape=(n_caps, args.emb_dim))
  for start in range(0, n_caps, 20_000):
    stop = min(start + 20_000, n_caps)
    emb[start:stop] = rng.standard_normal((stop - start, args.emb_dim),
                                          np.float32)
  emb.flush()
  del emb
  with open(os.path.join(out, f"{split}_caps.txt"), "w",
            encoding="utf-8") as f:
    for start in range(0, n_caps, 20_000):
      lengths = rng.integers(8, 16, min(20_000, n_caps - start))
      words = rng.choice(_WORDS, (len(lengths), 16))
      f.writelines(" ".join(w[:n]) + "\n" for w, n in zip(words, lengths))


def write_all(root: str, num_images: int, eval_images: int,
              eval_splits: tuple[str, str], args, written: dict) -> None:
  """Writes the .npy dataset (with `eval_splits` if `args.cli_steps`) and
  its vocabulary; `written[split]` = (seconds, load before, load after)."""
  splits = [("train", num_images, 0)]
  if args.cli_steps:
    splits += [(name, eval_images, seed)
               for seed, name in enumerate(eval_splits, start=1)]
  for split, count, seed in splits:
    t0, load = time.perf_counter(), os.getloadavg()[0]
    write_split(os.path.join(root, "npy"), split, count, args, seed)
    written[split] = (time.perf_counter() - t0, load, os.getloadavg()[0])
  print(f"wrote .npy (seconds, load at start, at end): {written}", flush=True)
  vocab_lib.Vocabulary.build(precomputed.read_captions(
      os.path.join(root, "npy", "train_caps.txt"))).save(
          os.path.join(root, "npy", VOCAB))


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
  """Share of the bytes of `paths` in the page cache (mincore(2)).

  Maps each file read-only and shared through libc: Python's writable
  copy-on-write map of a 33 GB file is refused by the kernel's overcommit
  check on a 24 GiB machine.
  """
  libc = ctypes.CDLL(None, use_errno=True)
  libc.mmap.restype = ctypes.c_void_p
  libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                        ctypes.c_int, ctypes.c_int, ctypes.c_long)
  libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
  page = mmap.PAGESIZE
  resident = total = 0
  for path in paths:
    size = os.path.getsize(path)
    if not size:
      continue
    with open(path, "rb") as f:
      address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED,
                          f.fileno(), 0)
    if address == ctypes.c_void_p(-1).value:
      raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
    try:
      pages = (size + page - 1) // page
      vec = np.zeros(pages, np.uint8)
      if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(size),
                      vec.ctypes.data_as(ctypes.c_void_p)) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    finally:
      libc.munmap(address, size)
    resident += int(np.count_nonzero(vec & 1))
    total += pages
  return resident / max(total, 1)


class PeakRss:
  """Samples a process's memory every 20 ms while active (default: this one).

  Peaks of RssAnon (private, anonymous memory: what the process holds
  itself) and RssFile (mapped file pages, which the kernel can drop), and
  VmHWM (the kernel's own peak RSS). With `rollup`, also the peak
  "Anonymous" of /proc/<pid>/smaps_rollup, once a second (walking the page
  tables of a 33 GB mapping is not free).
  """

  def __init__(self, pid: int | str = "self", rollup: bool = False):
    self.pid = pid
    self.anon = self.file = self.hwm = self.rollup_anon = 0
    self._rollup = rollup
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  @staticmethod
  def now(pid: int | str = "self") -> tuple[int, int, int]:
    """(RssAnon, RssFile, VmHWM) in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
      for line in f:
        if line.startswith(("RssAnon:", "RssFile:", "VmHWM:")):
          key, value = line.split(":")
          fields[key] = int(value.split()[0]) * 1024
    return fields["RssAnon"], fields["RssFile"], fields["VmHWM"]

  def _sample(self, with_rollup: bool) -> None:
    anon, file, hwm = self.now(self.pid)
    self.anon, self.file = max(self.anon, anon), max(self.file, file)
    self.hwm = max(self.hwm, hwm)
    if with_rollup:
      with open(f"/proc/{self.pid}/smaps_rollup", encoding="ascii") as f:
        for line in f:
          if line.startswith("Anonymous:"):
            self.rollup_anon = max(self.rollup_anon,
                                   int(line.split()[1]) * 1024)

  def _run(self):
    last_rollup = 0.0
    while not self._stop.is_set():
      now = time.monotonic()
      with_rollup = self._rollup and now - last_rollup >= 1.0
      try:
        self._sample(with_rollup)
      except (FileNotFoundError, ProcessLookupError, KeyError):
        return  # the process has exited (or is a zombie)
      last_rollup = now if with_rollup else last_rollup
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
  from itr_jax import losses, models  # pylint: disable=g-import-not-at-top
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
  return train_step_lib.make_train_step(
      model, losses.LossOptions.from_config(config.loss)), state


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
  load = os.getloadavg()[0]
  command = [sys.executable, __file__, f"--measure={kind}", f"--fmt={fmt}",
             f"--root={root}", f"--processes={processes}"] + [
                 f"--{k}={getattr(args, k)}" for k in (
                     "batch_size", "steps", "train_steps", "max_len")]
  proc = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{kind} {fmt} failed:\n{proc.stderr[-3000:]}")
  result = {**json.loads(lines[-1][len("RESULT "):]), "resident": resident,
            "load": (load, os.getloadavg()[0])}
  print(f"{kind} {fmt} processes={processes} cold={cold}: {result}",
        flush=True)
  return result


def watch(command: list[str], log_path: str, stop_when=None) -> dict:
  """Runs `command`, sampling its memory; SIGTERM once `stop_when()` is true.

  SIGTERM is the trainer's preemption signal: it finishes the step, writes a
  checkpoint and exits with status 0.
  """
  t0 = time.time()
  load = os.getloadavg()[0]
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    with PeakRss(proc.pid, rollup=True) as rss:
      while proc.poll() is None:
        if stop_when is not None and stop_when():
          proc.send_signal(signal.SIGTERM)
          stop_when = None
        time.sleep(1)
  if proc.returncode:
    with open(log_path, encoding="utf-8") as log:
      raise RuntimeError(f"{command} failed:\n{log.read()[-3000:]}")
  return {"start": t0, "seconds": time.time() - t0, "rss_anon": rss.anon,
          "rollup_anon": rss.rollup_anon, "hwm": rss.hwm,
          "rss_file": rss.file, "load": (load, os.getloadavg()[0])}


def train_cli(root: str, args) -> dict:
  """The trainer CLI with the scale's paper config (VSE++, S-NDCG) for
  about `args.cli_steps` steps (SIGTERM after the dev evaluation at that
  step), then `itr_jax.evaluate` on the test split, each watched."""
  _, config, _, test_split, _ = SCALES[args.scale]
  workdir = os.path.join(root, "workdir")
  n = args.cli_steps
  drop_page_cache(data_files("npy", root))
  resident = resident_fraction(data_files("npy", root))
  train = watch(
      [sys.executable, "-m", "itr_jax.train",
       f"--config={os.path.join(REPO, 'configs', config)}:sndcg",
       f"--config.data.data_dir={os.path.join(root, 'npy')}",
       f"--config.train.batch_size={args.batch_size}",
       f"--config.eval.every_steps={n}", f"--config.train.log_every_steps={n}",
       f"--workdir={workdir}"],
      os.path.join(root, "train.log"),
      stop_when=lambda: any(r["kind"] == "dev" and r["step"] == n
                            for r in reporting.read_metrics(workdir)))
  records = reporting.read_metrics(workdir)
  dev = [r for r in records if r["kind"] == "dev"]
  logged = [r for r in records if r["kind"] == "train"]
  print(f"train CLI: {train}; dev: {dev}; train: {logged}", flush=True)
  evaluate = watch(
      [sys.executable, "-m", "itr_jax.evaluate", f"--workdir={workdir}",
       "--checkpoint=latest", f"--split={test_split}"],
      os.path.join(root, "evaluate.log"))
  with open(os.path.join(root, "evaluate.log"), encoding="utf-8") as f:
    print(f"evaluate CLI: {evaluate}\n{f.read()[-2000:]}", flush=True)
  checkpoints = os.path.join(workdir, "checkpoints")
  steps = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
  return {"train": train, "evaluate": evaluate, "resident": resident,
          "steps": steps,
          "first_eval_at": dev[0]["time"] - dev[0]["eval_seconds"] -
                           train["start"],
          "dev": dev, "logged": logged}


def load_average() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg())


def print_cli(cli: dict, args) -> None:
  """The trainer and evaluator runs of `train_cli`, as a table."""
  _, config, dev_split, test_split, _ = SCALES[args.scale]
  logged = cli["logged"][-1] if cli["logged"] else {}
  dev_s = " + ".join(f"{r['eval_seconds']:.0f}" for r in cli["dev"])
  print(f"\nconfigs/{config}:sndcg, B={args.batch_size}, {cli['steps']} "
        f"steps (SIGTERM after the {dev_split} evaluation at step "
        f"{args.cli_steps}), then itr_jax.evaluate --split={test_split}; "
        f"data {100 * cli['resident']:.0f}% in the page cache at the start:")
  print("| process | wall s | details | peak RssAnon / smaps_rollup "
        "Anonymous (MiB) | peak RSS VmHWM / RssFile (MiB) | load |")
  print("|---|---|---|---|---|---|")
  for name, details in (
      ("train", f"start to first {dev_split} eval "
                f"{cli['first_eval_at']:.0f} s; {dev_split} evals {dev_s} s; "
                f"compile {logged.get('compile_seconds', float('nan')):.0f} s; "
                f"{logged.get('steps_per_second', float('nan')):.2f} steps/s"),
      ("evaluate", f"{test_split}")):
    r = cli[name]
    print(f"| {name} | {r['seconds']:.0f} | {details} | "
          f"{r['rss_anon'] / 2**20:.0f} / {r['rollup_anon'] / 2**20:.0f} | "
          f"{r['hwm'] / 2**20:.0f} / {r['rss_file'] / 2**20:.0f} | "
          f"{r['load'][0]:.1f}-{r['load'][1]:.1f} |")


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
  parser.add_argument("--reuse", default="",
                      help="measure a dataset kept by an earlier --keep run "
                      "(its folder) instead of writing one; kept afterwards")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=100,
                      help="global batches timed for the input rate")
  parser.add_argument("--train_steps", type=int, default=5,
                      help="train steps timed (0: skip the train step)")
  parser.add_argument("--regions", type=int, default=36)
  parser.add_argument("--feature_dim", type=int, default=2048)
  parser.add_argument("--emb_dim", type=int, default=768)
  parser.add_argument("--max_len", type=int, default=32)
  parser.add_argument("--cli_steps", type=int, default=0,
                      help="also write the dev and test splits and train "
                      "with the scale's paper config (python -m "
                      "itr_jax.train) for about this many steps, then "
                      "evaluate the test split (0: skip)")
  parser.add_argument("--measure", choices=("start", "input", "train"),
                      help=argparse.SUPPRESS)  # child process mode
  parser.add_argument("--fmt", help=argparse.SUPPRESS)
  parser.add_argument("--root", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.measure:
    print("RESULT " + json.dumps(measure(args)))
    return
  formats = args.formats.split(",")
  train_images, _, dev_split, test_split, eval_images = SCALES[args.scale]
  num_images = args.num_images or train_images
  image_bytes = 4 * (args.regions * args.feature_dim + 5 * args.emb_dim)
  size = num_images * image_bytes
  eval_size = 2 * eval_images * image_bytes if args.cli_steps else 0
  # .npy alone: its size; with TFDS, 2x per format (TFDS spills its write
  # buffer), as measured on the Flickr30K-size run.
  need = (size if formats == ["npy"] else 2 * size * len(formats)) + eval_size
  if args.reuse:  # written already, and kept
    args.keep, need = True, 0
  free = shutil.disk_usage(args.dir).free
  print(f"dataset: {num_images} images, {5 * num_images} captions, "
        f"{size / GB:.2f} GB per format (+ {eval_size / GB:.2f} GB of "
        f"{dev_split}/{test_split}); {free / GB:.0f} GB free in "
        f"{args.dir}, {need / GB:.0f} GB needed; load {load_average()}")
  if free < need:
    raise SystemExit(f"refusing: {args.dir} has {free / GB:.1f} GB free, "
                     f"{need / GB:.1f} GB needed")
  if args.cli_steps and "npy" not in formats:
    raise SystemExit("--cli_steps trains from the .npy format: add npy to "
                     "--formats")
  root = args.reuse or tempfile.mkdtemp(prefix="itr_input_bench_",
                                        dir=args.dir)
  rows, cli, written = [], None, {}
  try:
    if not args.reuse:
      write_all(root, num_images, eval_images, (dev_split, test_split), args,
                written)
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
    if args.cli_steps:
      cli = train_cli(root, args)
  finally:
    if args.keep:
      print(f"kept {root}")
    else:
      shutil.rmtree(root)

  print(f"\nB={args.batch_size}, {num_images} images x {args.regions} x "
        f"{args.feature_dim}, one host:")
  print("| format | 1st start: open / 1st batch (s) | 2nd start (s) "
        "| processes | cache | resident | input samples/s "
        "| RssAnon at start / peak; peak RssFile (MiB) | load |")
  print("|---|---|---|---|---|---|---|---|---|")
  for fmt, starts, rates, _ in rows:
    for (p, cold), r in rates.items():
      print(f"| {fmt} | {starts[0]['open_s']:.1f} / "
            f"{starts[0]['first_batch_s']:.1f} | {starts[1]['open_s']:.1f} / "
            f"{starts[1]['first_batch_s']:.1f} | {p} | "
            f"{'cold' if cold else 'warm'} | {100 * r['resident']:.0f}% | "
            f"{r['samples_s']:.0f} | {r['rss_anon_before'] / 2**20:.0f} / "
            f"{r['rss_anon'] / 2**20:.0f} / {r['rss_file'] / 2**20:.0f} | "
            f"{r['load'][0]:.1f}-{r['load'][1]:.1f} |")
  if args.train_steps:
    print("\n| format | train step alone (steps/s) | fed by the pipeline "
          "(steps/s) | load |")
    print("|---|---|---|---|")
    for fmt, _, _, train in rows:
      print(f"| {fmt} | {train['alone_steps_s']:.2f} | "
            f"{train['fed_steps_s']:.2f} | {train['load'][0]:.1f}-"
            f"{train['load'][1]:.1f} |")
  print("\n| written | seconds | load |\n|---|---|---|")
  for split, (seconds, before, after) in written.items():
    print(f"| {split} | {seconds:.0f} | {before:.1f}-{after:.1f} |")
  if cli:
    print_cli(cli, args)


if __name__ == "__main__":
  main()
