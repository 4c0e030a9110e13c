"""Checksum of a file, for provenance sidecars."""
from __future__ import annotations

import hashlib

from itr_jax import filesystem as fs


def file_sha256(path: str, chunk_bytes: int = 1 << 20) -> str:
  """Hex sha256 of a file's bytes (local or gs://), read in chunks (bounded memory).

  >>> import tempfile
  >>> f = tempfile.NamedTemporaryFile(delete=False); _ = f.write(b"abc"); f.close()
  >>> file_sha256(f.name)[:16]
  'ba7816bf8f01cfea'
  """
  digest = hashlib.sha256()
  with fs.open(path, "rb") as f:
    for block in iter(lambda: f.read(chunk_bytes), b""):
      digest.update(block)
  return digest.hexdigest()
