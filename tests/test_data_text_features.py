"""Tests for itr_jax.data.text_features: TF-IDF caption embeddings."""
import math

import numpy as np
import pytest

from itr_jax.data import precomputed
from itr_jax.data import text_features as tf_lib
from itr_jax.data.testing import write_random_split

TRAIN = ["a red dog", "a blue car", "a red car", "the dog on the car"]


def _reference_tfidf(train, texts):
  """Plain-Python TF-IDF over unigrams+bigrams, float64, L2-normalised."""
  def grams(t):
    w = t.lower().split()
    return w + [f"{a} {b}" for a, b in zip(w, w[1:])]
  df = {}
  for t in train:
    for g in set(grams(t)):
      df[g] = df.get(g, 0) + 1
  terms = sorted(df)
  out = np.zeros((len(texts), len(terms)))
  for i, t in enumerate(texts):
    for g in grams(t):
      if g in df:
        out[i, terms.index(g)] += math.log((1 + len(train)) / (1 + df[g])) + 1
    n = np.linalg.norm(out[i])
    if n:
      out[i] /= n
  return out


def test_full_tfidf_matches_reference_cosines():
  f = tf_lib.TfidfFeaturizer.fit(TRAIN, dim=0)
  texts = TRAIN + ["red dog", "a zebra", "the car the car"]
  got = f.transform(texts).astype(np.float64)
  ref = _reference_tfidf(TRAIN, texts)
  # Term order differs, so compare the (order-free) Gram matrices.
  np.testing.assert_allclose(got @ got.T, ref @ ref.T, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=1),
                             np.linalg.norm(ref, axis=1), atol=1e-6)


def test_unknown_only_caption_is_zero():
  f = tf_lib.TfidfFeaturizer.fit(TRAIN, dim=8)
  e = f.transform(["zebra giraffe", "a red dog"])
  np.testing.assert_array_equal(e[0], 0)
  assert abs(np.linalg.norm(e[1]) - 1) < 1e-6


def test_projection_is_deterministic_and_roughly_keeps_cosines():
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(40)]
  train = [" ".join(rng.choice(words, 6)) for _ in range(300)]
  full = tf_lib.TfidfFeaturizer.fit(train, dim=0).transform(train[:50])
  f = tf_lib.TfidfFeaturizer.fit(train, dim=1024, seed=3)
  proj = f.transform(train[:50])
  assert proj.shape == (50, 1024) and proj.dtype == np.float32
  np.testing.assert_array_equal(
      proj, tf_lib.TfidfFeaturizer.fit(train, dim=1024, seed=3).transform(
          train[:50]))
  # Johnson-Lindenstrauss: cosine error ~ 1/sqrt(1024).
  assert np.abs(proj @ proj.T - full @ full.T).max() < 0.2
  other = tf_lib.TfidfFeaturizer.fit(train, dim=1024, seed=4).transform(
      train[:50])
  assert not np.allclose(proj, other)


def test_chunking_does_not_change_result():
  f = tf_lib.TfidfFeaturizer.fit(TRAIN, dim=16)
  texts = TRAIN * 5 + ["zebra"] + TRAIN
  np.testing.assert_allclose(f.transform(texts, chunk=3), f.transform(texts),
                             atol=1e-6)


def test_bad_args():
  with pytest.raises(ValueError, match="non-empty"):
    tf_lib.TfidfFeaturizer.fit([])
  with pytest.raises(ValueError, match="dim"):
    tf_lib.TfidfFeaturizer.fit(TRAIN, dim=-1)
  with pytest.raises(ValueError, match="min_count"):
    tf_lib.TfidfFeaturizer.fit(TRAIN, min_count=100)


def test_cli_writes_loadable_embeddings(tmp_path, capsys):
  write_random_split(str(tmp_path), "train", num_images=3, emb_dim=0)
  write_random_split(str(tmp_path), "dev", num_images=2, emb_dim=0, seed=1)
  tf_lib.main(["--data_dir", str(tmp_path), "--dim", "12"])
  assert "dev:" in capsys.readouterr().out
  s = precomputed.load_split(str(tmp_path), "dev", require_caption_emb=True)
  assert s.caption_emb.shape == (10, 12)
  with pytest.raises(ValueError, match="--overwrite"):
    tf_lib.main(["--data_dir", str(tmp_path)])
  tf_lib.main(["--data_dir", str(tmp_path), "--dim", "5", "--overwrite",
               "--splits", "dev"])
  assert precomputed.load_split(str(tmp_path), "dev").emb_dim == 5


def test_rewriting_embeddings_drops_a_stale_encoder_sidecar(tmp_path):
  from itr_jax.data import testing as data_testing
  from itr_jax.data import text_features as tf_lib
  d = str(tmp_path)
  data_testing.write_random_split(d, "train", num_images=4, emb_dim=0)
  with open(f"{d}/train_caps_emb.json", "w") as f:
    f.write('{"encoder": "an older MiniLM run"}')
  tf_lib.write_caption_embeddings(d, splits=["train"], dim=8)
  assert not (tmp_path / "train_caps_emb.json").exists()
  from itr_jax.data import precomputed
  assert precomputed.load_split(d, "train").caption_emb.shape == (20, 8)
