"""Caption-embedding files: where they live and their provenance sidecar.

``{split}_caps_emb.npy`` ([N, dim] float32, row i embedding caption line i)
sits next to ``{split}_caps.txt``; the sidecar ``{split}_caps_emb.json``
records the encoder and the sha256 of the captions and of the embeddings, so
stale or edited files are caught (`check_sidecar`). The loader
(`data.precomputed`) checks them; `itr_jax.tools.embed_captions` writes them.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from itr_jax import filesystem as fs
from itr_jax.data import staging
from itr_jax.text_encoders.file_sha256 import file_sha256

SIDECAR_FORMAT = "itr_jax.caption_embeddings/1"
MAX_SIDECAR_BYTES = 16 << 20
CAPS_SUFFIX = "_caps.txt"


def default_output_path(captions_path: str) -> str:
  """``{split}_caps.txt`` -> ``{split}_caps_emb.npy`` (the loader's default).

  >>> default_output_path("/data/f30k/train_caps.txt")
  '/data/f30k/train_caps_emb.npy'
  """
  stem = captions_path[:-4] if captions_path.endswith(".txt") else captions_path
  return stem + "_emb.npy"


def sidecar_path(emb_path: str) -> str:
  """``x.npy`` -> ``x.json``, the provenance record next to the embeddings."""
  stem = emb_path[:-4] if emb_path.endswith(".npy") else emb_path
  return stem + ".json"


def stage_embeddings(emb_url: str, cache: str) -> str:
  """Local verified copy (`staging`) of remote embeddings and, if any, their sidecar."""
  if fs.exists(sidecar_path(emb_url)):
    staging.stage(sidecar_path(emb_url), cache)
  return staging.stage(emb_url, cache)


def read_sidecar(emb_path: str) -> Optional[dict]:
  """The sidecar record of `emb_path`, or None when it has none."""
  path = sidecar_path(emb_path)
  if not os.path.isfile(path):
    return None
  return fs.read_json_object(path, MAX_SIDECAR_BYTES, what="caption-embedding sidecar")


def fix_command(captions_path: str, emb_path: str, overwrite: bool) -> str:
  """The CLI invocation that (re)writes `emb_path` from `captions_path`."""
  data_dir = os.path.dirname(captions_path) or "."
  name = os.path.basename(captions_path)
  if name.endswith(CAPS_SUFFIX):
    args = f"--data_dir={data_dir} --split={name[:-len(CAPS_SUFFIX)]}"
  else:
    args = f"--captions={captions_path}"
  if os.path.abspath(emb_path) != os.path.abspath(
      default_output_path(captions_path)):
    args += f" --out={emb_path}"
  return (f"python -m itr_jax.tools.embed_captions {args}"
          + (" --overwrite" if overwrite else ""))


def check_sidecar(emb_path: str, captions_path: str, count: int) -> None:
  """Raises ValueError (with the command to fix it) if `emb_path` is stale.

  Checks the row count against the `count` captions of `captions_path`
  and, when the sidecar exists, the
  captions' sha256, count, dim and dtype it records, and the embeddings'
  own sha256 (sidecars written since it was added). Embeddings without a
  sidecar (e.g. downloaded ones) pass on the count alone.
  """
  fix = fix_command(captions_path, emb_path, True)
  if not os.path.isfile(emb_path):
    raise ValueError(f"missing caption embeddings {emb_path!r}; run: "
                     f"{fix_command(captions_path, emb_path, False)}")
  emb = np.load(emb_path, mmap_mode="r")
  if emb.ndim != 2 or emb.shape[0] != count:
    raise ValueError(f"{emb_path!r} has shape {emb.shape} but "
                     f"{captions_path!r} has {count} captions; re-embed: "
                     f"{fix}")
  try:
    record = read_sidecar(emb_path)
  except ValueError as e:
    raise ValueError(f"{e} Re-embed: {fix}") from e
  if record is None:
    return
  problems = []
  if record.get("captions_sha256") != file_sha256(captions_path):
    problems.append(f"it was made from a different "
                    f"{record.get('captions_file', 'captions file')} "
                    "(sha256 mismatch)")
  if record.get("count") != count:
    problems.append(f"it records {record.get('count')} captions, not {count}")
  if record.get("dim") != emb.shape[1] or record.get("dtype") != str(
      emb.dtype):
    problems.append(f"it records dim {record.get('dim')} / dtype "
                    f"{record.get('dtype')} but the file is {emb.shape[1]} / "
                    f"{emb.dtype}")
  if ("embeddings_sha256" in record and not problems
      and record["embeddings_sha256"] != file_sha256(emb_path)):
    problems.append("the embeddings file changed after its sidecar was "
                    "written (sha256 mismatch)")
  if problems:
    raise ValueError(f"{emb_path!r} does not match {captions_path!r}: "
                     f"{'; '.join(problems)}. Re-embed: {fix}")
