"""The resumable caption-embedding tool and its sidecar check."""
import json
import os

import numpy as np
import pytest

from itr_jax.text_encoders.file_sha256 import file_sha256
from itr_jax.tools import embed_captions as ec

CAPTIONS = [f"caption number {i} about a dog" for i in range(11)]


class CountingEncoder:
  """Deterministic stand-in: row = f(text); counts the captions it embeds."""
  name = "counting"
  weights_sha256 = "ab" * 32
  tokenizer_settings = {"max_seq_length": 8, "lowercase": True}
  dim = 3

  def __init__(self):
    self.calls = []

  def encode(self, texts, batch_size):
    self.calls.append(list(texts))
    return np.array([[len(t), sum(map(ord, t)) % 97, i] for i, t in
                     enumerate(texts)], np.float32)


def _write(tmp_path, captions=CAPTIONS, split="train"):
  path = tmp_path / f"{split}_caps.txt"
  path.write_text("\n".join(captions) + "\n", encoding="utf-8")
  return str(path)


def _expected(captions, chunk_size):
  enc = CountingEncoder()
  return np.concatenate([enc.encode(captions[s:s + chunk_size], 1)
                         for s in range(0, len(captions), chunk_size)])


def test_writes_aligned_embeddings_and_sidecar(tmp_path):
  caps = _write(tmp_path)
  enc = CountingEncoder()
  out = ec.embed_captions_file(caps, encoder=enc, chunk_size=4,
                               progress=False)
  assert out == str(tmp_path / "train_caps_emb.npy")
  emb = np.load(out)
  assert emb.dtype == np.float32
  np.testing.assert_array_equal(emb, _expected(CAPTIONS, 4))
  assert [len(c) for c in enc.calls] == [4, 4, 3]
  side = json.loads((tmp_path / "train_caps_emb.json").read_text())
  assert side["count"] == 11 and side["dim"] == 3
  assert side["dtype"] == "float32"
  assert side["captions_sha256"] == file_sha256(caps)
  assert side["captions_file"] == "train_caps.txt"
  assert side["encoder"]["name"] == "counting"
  assert side["encoder"]["weights_sha256"] == "ab" * 32
  assert side["encoder"]["tokenizer"] == {"max_seq_length": 8,
                                          "lowercase": True}
  assert not os.path.exists(out + ".partial")
  assert sorted(os.listdir(tmp_path)) == ["train_caps.txt", "train_caps_emb.json",
                                          "train_caps_emb.npy"]


def test_interrupted_run_resumes_without_recomputing(tmp_path):
  caps = _write(tmp_path)
  enc = CountingEncoder()

  def crash_after_two(start, end):
    if end >= 8:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    ec.embed_captions_file(caps, encoder=enc, chunk_size=4, progress=False,
                           on_chunk_done=crash_after_two)
  out = tmp_path / "train_caps_emb.npy"
  assert not out.exists() and not (tmp_path / "train_caps_emb.json").exists()
  assert len(os.listdir(str(out) + ".partial")) == 3  # manifest + 2 chunks
  # A rerun with another chunk size keeps the interrupted run's chunks.
  enc2 = CountingEncoder()
  ec.embed_captions_file(caps, encoder=enc2, chunk_size=5, progress=False)
  assert enc2.calls == [CAPTIONS[8:11]]
  np.testing.assert_array_equal(np.load(out), _expected(CAPTIONS, 4))


def test_torn_chunk_is_recomputed(tmp_path):
  caps = _write(tmp_path)

  def crash(start, end):
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    ec.embed_captions_file(caps, encoder=CountingEncoder(), chunk_size=4,
                           progress=False, on_chunk_done=crash)
  chunk = tmp_path / "train_caps_emb.npy.partial" / "chunk_0000000000_0000000004.npy"
  chunk.write_bytes(chunk.read_bytes()[:40])  # truncated write
  enc = CountingEncoder()
  ec.embed_captions_file(caps, encoder=enc, chunk_size=4, progress=False)
  assert [len(c) for c in enc.calls] == [4, 4, 3]


def test_stale_partial_work_is_discarded(tmp_path):
  caps = _write(tmp_path)
  with pytest.raises(RuntimeError):
    ec.embed_captions_file(caps, encoder=CountingEncoder(), chunk_size=4,
                           progress=False,
                           on_chunk_done=lambda s, e: (_ for _ in ()).throw(
                               RuntimeError()))
  changed = CAPTIONS[:3] + ["a different caption"] + CAPTIONS[4:]
  _write(tmp_path, changed)
  enc = CountingEncoder()
  ec.embed_captions_file(caps, encoder=enc, chunk_size=4, progress=False)
  assert [len(c) for c in enc.calls] == [4, 4, 3]
  np.testing.assert_array_equal(np.load(tmp_path / "train_caps_emb.npy"),
                                _expected(changed, 4))


def test_up_to_date_output_is_not_recomputed(tmp_path):
  caps = _write(tmp_path)
  ec.embed_captions_file(caps, encoder=CountingEncoder(), progress=False)
  enc = CountingEncoder()
  ec.embed_captions_file(caps, encoder=enc, progress=False)
  assert enc.calls == []


def test_refuses_to_overwrite_a_different_output(tmp_path):
  caps = _write(tmp_path)
  out = tmp_path / "train_caps_emb.npy"
  ec.embed_captions_file(caps, encoder=CountingEncoder(), progress=False)
  before = out.read_bytes()
  other = CountingEncoder()
  other.name = "another-encoder"
  with pytest.raises(FileExistsError, match="--overwrite") as e:
    ec.embed_captions_file(caps, encoder=other, progress=False)
  assert "encoder" in str(e.value)
  assert out.read_bytes() == before and other.calls == []
  # Same for an output with no sidecar (e.g. a downloaded or TF-IDF file).
  (tmp_path / "train_caps_emb.json").unlink()
  with pytest.raises(FileExistsError, match="no sidecar"):
    ec.embed_captions_file(caps, encoder=CountingEncoder(), progress=False)
  assert out.read_bytes() == before
  ec.embed_captions_file(caps, encoder=other, overwrite=True, progress=False)
  side = json.loads((tmp_path / "train_caps_emb.json").read_text())
  assert side["encoder"]["name"] == "another-encoder"


def test_check_sidecar(tmp_path):
  caps = _write(tmp_path)
  out = str(tmp_path / "train_caps_emb.npy")
  with pytest.raises(ValueError, match="missing caption embeddings.*"
                     "--data_dir=.* --split=train"):
    ec.check_sidecar(out, caps)
  ec.embed_captions_file(caps, encoder=CountingEncoder(), progress=False)
  ec.check_sidecar(out, caps)  # consistent
  # Same count, different text: only the sidecar's sha256 can tell.
  _write(tmp_path, CAPTIONS[:-1] + ["edited"])
  with pytest.raises(ValueError, match="sha256.*--overwrite"):
    ec.check_sidecar(out, caps)
  _write(tmp_path, CAPTIONS + ["one more"])
  with pytest.raises(ValueError, match="12 captions"):
    ec.check_sidecar(out, caps)
  # Without a sidecar only the count is checked.
  os.unlink(ec.sidecar_path(out))
  with pytest.raises(ValueError, match="12 captions"):
    ec.check_sidecar(out, caps)
  _write(tmp_path, ["x"] * 11)
  ec.check_sidecar(out, caps)


def test_check_sidecar_names_a_custom_output(tmp_path):
  caps = _write(tmp_path, split="dev")
  with pytest.raises(ValueError, match=r"--split=dev --out=.*custom\.npy"):
    ec.check_sidecar(str(tmp_path / "custom.npy"), caps)


def test_bad_arguments(tmp_path):
  caps = _write(tmp_path)
  with pytest.raises(ValueError, match="chunk_size"):
    ec.embed_captions_file(caps, encoder=CountingEncoder(), chunk_size=0)
  with pytest.raises(ValueError, match=r"\.npy"):
    ec.embed_captions_file(caps, str(tmp_path / "x.bin"),
                           encoder=CountingEncoder())
  (tmp_path / "bad_caps.txt").write_text("a\n\nb\n")
  with pytest.raises(ValueError, match="empty caption"):
    ec.embed_captions_file(str(tmp_path / "bad_caps.txt"),
                           encoder=CountingEncoder())


def test_cli_with_the_real_encoder_matches_direct_encode(tmp_path, capsys):
  from itr_jax.text_encoders import SentenceEncoder
  captions = ["A dog runs on the grass.", "two people ride bikes",
              "Un café sur la table", "a very " * 30 + "long caption"]
  _write(tmp_path, captions, split="dev")
  assert ec.main([f"--data_dir={tmp_path}", "--split=dev", "--batch_size=2",
                  "--chunk_size=3", "--no_progress"]) == 0
  got = np.load(tmp_path / "dev_caps_emb.npy")
  want = SentenceEncoder.from_pretrained().encode(captions)
  assert got.shape == (4, 384) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-6)
  side = json.loads((tmp_path / "dev_caps_emb.json").read_text())
  assert side["encoder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
  assert side["encoder"]["tokenizer"]["max_seq_length"] == 256
  assert side["count"] == 4 and side["dim"] == 384
  # A second run with another output name refuses nothing and writes there.
  out2 = tmp_path / "sub" / "e.npy"
  os.makedirs(out2.parent)
  assert ec.main([f"--captions={tmp_path}/dev_caps.txt", f"--out={out2}",
                  "--no_progress"]) == 0
  np.testing.assert_allclose(np.load(out2), got, atol=1e-6)
  # Refusal goes to stderr with exit status 1.
  (tmp_path / "dev_caps_emb.json").unlink()
  assert ec.main([f"--data_dir={tmp_path}", "--split=dev",
                  "--no_progress"]) == 1
  assert "--overwrite" in capsys.readouterr().err
