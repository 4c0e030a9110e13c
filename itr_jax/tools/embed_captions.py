r"""Sentence embeddings of a captions file, for RSC relevance (resumable).

    python -m itr_jax.tools.embed_captions --data_dir=DIR --split=train

reads ``DIR/train_caps.txt`` (one caption per line, as the precomputed loader
reads it) and writes ``DIR/train_caps_emb.npy`` (``[N, dim]`` float32, row i
embedding line i, unit L2 norm) plus the sidecar ``DIR/train_caps_emb.json``
recording the encoder (name, sha256 of its weights, tokenizer settings), the
count, dim and dtype, and the sha256 of the captions file and of the
embeddings file itself (so an edited or replaced array is caught).

Work is done in chunks saved under ``train_caps_emb.npy.partial/``; a rerun
after an interruption skips finished chunks. The output and sidecar appear
only when complete (atomic renames). An existing output made from other
captions or by another encoder is never replaced without ``--overwrite``.
Captions and output may be gs:// URLs: the work is then done on local copies
in ``--local_cache_dir`` and a new output is uploaded when complete.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> _ = open(os.path.join(d, "dev_caps.txt"), "w").write("a dog\na cat\n")
>>> class Fake:  # any object with these attributes works as the encoder
...   name, weights_sha256, tokenizer_settings, dim = "fake", "0", {}, 2
...   def encode(self, texts, batch_size): return np.ones((len(texts), 2), np.float32)
>>> path = embed_captions_file(os.path.join(d, "dev_caps.txt"), encoder=Fake(),
...                            progress=False)
>>> np.load(path).shape
(2, 2)
>>> check_sidecar(path, os.path.join(d, "dev_caps.txt"))  # consistent: no error
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
from typing import Any, Callable, Optional, Sequence

import numpy as np

from itr_jax import filesystem as fs
from itr_jax.data import caption_embeddings
# The loader's own caption reader, so the rows align with what training reads.
from itr_jax.data import precomputed
from itr_jax.data import staging
from itr_jax.data.caption_embeddings import SIDECAR_FORMAT
from itr_jax.data.caption_embeddings import default_output_path
from itr_jax.data.caption_embeddings import fix_command
from itr_jax.data.caption_embeddings import read_sidecar
from itr_jax.data.caption_embeddings import sidecar_path
from itr_jax.data.caption_embeddings import stage_embeddings
from itr_jax.text_encoders.file_sha256 import file_sha256

def _identity(captions_path: str, count: int, encoder: Any) -> dict:
  """The sidecar fields that must match for an output to be reusable."""
  return {
      "format": SIDECAR_FORMAT,
      "captions_file": os.path.basename(captions_path),
      "captions_sha256": file_sha256(captions_path),
      "count": count,
      "dim": int(encoder.dim),
      "dtype": "float32",
      "encoder": {
          "name": encoder.name,
          "weights_sha256": encoder.weights_sha256,
          "tokenizer": encoder.tokenizer_settings,
          "pooling": "mean",
          "normalized": True,
      },
  }


def _same(record: Optional[dict], identity: dict) -> bool:
  # Round-trip through JSON so tuples and lists compare equal.
  if record is None:
    return False
  want = json.loads(json.dumps(identity))
  return all(record.get(k) == v for k, v in want.items())


def _differences(record: Optional[dict], identity: dict) -> str:
  if record is None:
    return "it has no sidecar, so its captions and encoder are unknown"
  want = json.loads(json.dumps(identity))
  keys = [k for k, v in want.items() if record.get(k) != v]
  return "its sidecar differs in " + ", ".join(keys)


def _write_npy(path: str, array: np.ndarray) -> None:
  """np.save to a temporary name, then an atomic rename."""
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.save(f, array)
  os.replace(tmp, path)


def _chunk_path(partial_dir: str, start: int, end: int) -> str:
  return os.path.join(partial_dir, f"chunk_{start:010d}_{end:010d}.npy")


def _finished_chunk(path: str, rows: int, dim: int) -> bool:
  try:
    chunk = np.load(path, mmap_mode="r")
  except (OSError, ValueError):
    return False  # Absent or torn: compute it (again).
  return chunk.shape == (rows, dim) and chunk.dtype == np.float32


def _prepare_partial(partial_dir: str, identity: dict, chunk_size: int) -> int:
  """Creates or reuses the chunk directory; returns the chunk size to use."""
  manifest_path = os.path.join(partial_dir, "manifest.json")
  if os.path.isdir(partial_dir):
    manifest = None
    if os.path.isfile(manifest_path):
      try:
        manifest = fs.read_json(manifest_path, 1 << 20, what="partial-work manifest")
      except ValueError:
        manifest = None  # damaged: the partial work is discarded below
    chunk_size = manifest.get("chunk_size") if isinstance(manifest, dict) else None
    if (isinstance(chunk_size, int) and chunk_size >= 1
        and _same(manifest.get("identity"), identity)):
      return chunk_size  # Resume with the chunks as cut.
    print(f"discarding stale partial work in {partial_dir} (other captions or "
          "encoder)", file=sys.stderr)
    shutil.rmtree(partial_dir)
  os.makedirs(partial_dir)
  tmp = manifest_path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump({"identity": identity, "chunk_size": chunk_size}, f, indent=1)
  os.replace(tmp, manifest_path)
  return chunk_size


def embed_captions_file(
    captions_path: str,
    out_path: Optional[str] = None,
    *,
    encoder: Any = None,
    encoder_path: Optional[str] = None,
    batch_size: int = 128,
    chunk_size: int = 4096,
    overwrite: bool = False,
    progress: bool = True,
    on_chunk_done: Optional[Callable[[int, int], None]] = None,
    local_cache_dir: str = "",
) -> str:
  """Embeds every line of `captions_path` into `out_path`; returns out_path.

  Args:
    captions_path: one caption per line (read as the precomputed loader does).
    out_path: default ``{split}_caps_emb.npy`` next to ``{split}_caps.txt``.
    encoder: an object with ``encode(texts, batch_size) -> [n, dim] float32``
      and attributes ``name``, ``weights_sha256``, ``tokenizer_settings``,
      ``dim`` (a `SentenceEncoder`); default loads `encoder_path`.
    encoder_path: a sentence-transformers directory; None is the packaged
      all-MiniLM-L6-v2. Ignored when `encoder` is given.
    batch_size: captions per jitted encoder call.
    chunk_size: captions per saved chunk (the unit of resumption). A resumed
      run keeps the chunk size of the run it resumes.
    overwrite: replace an existing output that does not match these captions
      and this encoder (an up-to-date output is never recomputed).
    progress: show a tqdm progress bar.
    on_chunk_done: called as ``on_chunk_done(start, end)`` after each chunk
      is saved (progress reporting; tests use it to simulate interruption).
    local_cache_dir: where gs:// captions and outputs are worked on locally
      (`itr_jax.data.staging`; empty: ~/.cache/itr_jax/staged).

  Raises:
    FileExistsError: `out_path` exists from other captions/encoder and
      `overwrite` is False.
    ValueError: bad arguments or captions file.
  """
  if batch_size < 1 or chunk_size < 1:
    raise ValueError(f"batch_size ({batch_size}) and chunk_size "
                     f"({chunk_size}) must be >= 1")
  out_path = out_path or default_output_path(captions_path)
  if fs.is_remote(captions_path) or fs.is_remote(out_path):
    return _embed_via_cache(
        captions_path, out_path, encoder=encoder, encoder_path=encoder_path,
        batch_size=batch_size, chunk_size=chunk_size, overwrite=overwrite,
        progress=progress, on_chunk_done=on_chunk_done,
        cache=staging.cache_dir(local_cache_dir))
  captions = precomputed.read_captions(captions_path)
  if not out_path.endswith(".npy"):
    raise ValueError(f"out_path {out_path!r} must end in .npy")
  if encoder is None:
    from itr_jax.text_encoders.sentence_encoder import SentenceEncoder  # pylint: disable=g-import-not-at-top
    encoder = SentenceEncoder.from_pretrained(encoder_path)
  identity = _identity(captions_path, len(captions), encoder)

  if os.path.exists(out_path):
    try:
      record = read_sidecar(out_path)
    except ValueError as e:  # a damaged sidecar: the file's origin is unknown
      if not overwrite:
        raise FileExistsError(f"{out_path} exists and {e} Refusing to replace it; rerun "
                              f"with --overwrite: {fix_command(captions_path, out_path, True)}"
                              ) from e
      record = None
    if _same(record, identity):
      print(f"{out_path} is up to date ({len(captions)} captions, "
            f"{encoder.name})", file=sys.stderr)
      return out_path
    if not overwrite:
      raise FileExistsError(
          f"{out_path} exists but was not made from {captions_path} with "
          f"encoder {encoder.name!r}: {_differences(record, identity)}. "
          "Refusing to replace it; rerun with --overwrite (overwrite=True) "
          f"to do so: {fix_command(captions_path, out_path, True)}")

  partial_dir = out_path + ".partial"
  chunk_size = _prepare_partial(partial_dir, identity, chunk_size)
  n, dim = len(captions), int(encoder.dim)
  ranges = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
  todo = [(s, e) for s, e in ranges
          if not _finished_chunk(_chunk_path(partial_dir, s, e), e - s, dim)]
  from itr_jax.progress import ProgressBar  # pylint: disable=g-import-not-at-top
  with ProgressBar(total=n, initial=n - sum(e - s for s, e in todo),
                   unit="caption", disable=not progress,
                   desc=os.path.basename(out_path)) as bar:
    for start, end in todo:
      emb = np.asarray(encoder.encode(captions[start:end],
                                      batch_size=batch_size), np.float32)
      if emb.shape != (end - start, dim):
        raise ValueError(f"encoder returned shape {emb.shape} for "
                         f"{end - start} captions; expected "
                         f"{(end - start, dim)}")
      _write_npy(_chunk_path(partial_dir, start, end), emb)
      bar.update(end - start)
      if on_chunk_done is not None:
        on_chunk_done(start, end)

  # Assemble into a temporary file, then rename: the output is all or nothing.
  tmp = out_path + ".tmp"
  full = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                   shape=(n, dim))
  for start, end in ranges:
    full[start:end] = np.load(_chunk_path(partial_dir, start, end))
  full.flush()
  del full
  record = dict(identity, embeddings_sha256=file_sha256(tmp),
                itr_jax_tool="itr_jax.tools.embed_captions",
                created_utc=datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"))
  side_tmp = sidecar_path(out_path) + ".tmp"
  with open(side_tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1, ensure_ascii=False)
  # Embeddings first: a crash between the renames leaves a sidecar that no
  # longer matches, which check_sidecar reports, rather than a stale match.
  os.replace(tmp, out_path)
  os.replace(side_tmp, sidecar_path(out_path))
  shutil.rmtree(partial_dir)
  return out_path


def _embed_via_cache(captions_path: str, out_path: str, *, cache: str,
                     **kwargs) -> str:
  """`embed_captions_file` for gs:// paths: the output is assembled in a
  memory-mapped file, so the work happens on local copies in the staging
  cache (`itr_jax.data.staging`; a rerun resumes from its chunks there), and
  a new output is uploaded, embeddings first, then its sidecar."""
  local_captions = (staging.stage(captions_path, cache)
                    if fs.is_remote(captions_path) else captions_path)
  local_out = staging.local_path(out_path, cache) if fs.is_remote(out_path) else out_path
  before = None
  if fs.is_remote(out_path) and fs.exists(out_path):
    # The existing output decides: up to date, or refused without --overwrite.
    before = os.stat(stage_embeddings(out_path, cache)).st_mtime_ns
  embed_captions_file(local_captions, local_out, **kwargs)
  if fs.is_remote(out_path) and os.stat(local_out).st_mtime_ns != before:
    fs.copy(local_out, out_path)
    fs.copy(sidecar_path(local_out), sidecar_path(out_path))
  return out_path


def check_sidecar(emb_path: str, captions_path: str) -> None:
  """`caption_embeddings.check_sidecar` against the captions file's own count."""
  caption_embeddings.check_sidecar(emb_path, captions_path,
                                   len(precomputed.read_captions(captions_path)))


def _define_flags(fv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("data_dir", None, "Dataset directory.", flag_values=fv)
  flags.DEFINE_string("split", "train", "Reads {data_dir}/{split}_caps.txt.",
                      flag_values=fv)
  flags.DEFINE_string("captions", None, "Explicit captions file (instead of "
                      "--data_dir/--split).", flag_values=fv)
  flags.DEFINE_string("out", None, "Output .npy (default {split}_caps_emb.npy next "
                      "to the captions).", flag_values=fv)
  flags.DEFINE_string("encoder_path", None, "Local sentence-transformers directory "
                      "(default: packaged all-MiniLM-L6-v2).", flag_values=fv)
  flags.DEFINE_integer("batch_size", 128, "Captions per encoder batch.", flag_values=fv)
  flags.DEFINE_integer("chunk_size", 4096, "Captions per resumable chunk.",
                       flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an output made from other captions "
                    "or by another encoder.", flag_values=fv)
  flags.DEFINE_string("local_cache_dir", "", "Local folder for gs:// captions "
                      "and outputs (default ~/.cache/itr_jax/staged).",
                      flag_values=fv)
  flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
  flags.DEFINE_bool("no_progress", False, "Same as --noprogress (kept for old "
                    "scripts).", flag_values=fv)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`python -m itr_jax.tools.embed_captions --data_dir=DIR --split=S` (absl flags)."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  args = cli.parse_own_flags(argv, _define_flags, usage=(
      "python -m itr_jax.tools.embed_captions --data_dir=DIR --split=SPLIT [flags]\n"
      "Sentence embeddings of {split}_caps.txt for RSC relevance."))
  if args.captions:
    captions_path = args.captions
  elif args.data_dir:
    captions_path = os.path.join(args.data_dir,
                                 args.split + caption_embeddings.CAPS_SUFFIX)
  else:
    print("Error: pass --data_dir (with --split) or --captions", file=sys.stderr)
    return 1
  try:
    out = embed_captions_file(
        captions_path, args.out, encoder_path=args.encoder_path,
        batch_size=args.batch_size, chunk_size=args.chunk_size,
        overwrite=args.overwrite, progress=args.progress and not args.no_progress,
        local_cache_dir=args.local_cache_dir)
  except (FileExistsError, ValueError) as e:
    print(f"Error: {e}", file=sys.stderr)
    return 1
  print(out)
  return 0


def run():
  """Console-script entry point (itr-embed-captions)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
