"""NDCG@k and top-k against pytrec_eval, a float64 loop reference and hand values."""
import jax.numpy as jnp
import numpy as np
import pytest
import pytrec_eval

from itr_jax import metrics
from itr_jax.metrics import _checks


def reference_ndcg_row(scores, relevance, k=None):
  """Per-row NDCG@k: stable sort by -score (ties: lower index first)."""
  scores, relevance = np.asarray(scores, np.float64), np.asarray(relevance, np.float64)
  k = len(scores) if k is None else min(k, len(scores))
  order = np.argsort(-scores, kind="stable")[:k]
  ideal = np.sort(relevance)[::-1][:k]
  dcg = sum((2.0**relevance[j] - 1) / np.log2(pos + 2) for pos, j in enumerate(order))
  idcg = sum((2.0**r - 1) / np.log2(pos + 2) for pos, r in enumerate(ideal))
  return dcg / idcg if idcg > 0 else np.nan


@pytest.fixture
def tiny_chunks(monkeypatch):
  monkeypatch.setattr(_checks, "CHUNK_ELEMENTS", 29)


def test_hand_computed():
  scores = np.array([[0.9, 0.5, 0.1]])
  relevance = np.array([[0, 2, 1]])
  # DCG = 0 + 3/log2(3) + 1/log2(4); IDCG = 3 + 1/log2(3) + 0.
  expected = (3 / np.log2(3) + 0.5) / (3 + 1 / np.log2(3))
  assert metrics.ndcg(scores, relevance) == pytest.approx(expected, rel=1e-15)
  assert metrics.ndcg(scores, relevance, k=1) == 0.0
  # k=2: DCG@2 = 3/log2(3); IDCG@2 = 3 + 1/log2(3).
  assert metrics.ndcg(scores, relevance, k=2) == pytest.approx(
      (3 / np.log2(3)) / (3 + 1 / np.log2(3)), rel=1e-15)
  assert metrics.ndcg(np.array([[0.1, 0.5, 0.9]]), np.array([[0, 1, 2]])) == 1.0
  # Binary (bool) relevance: gains 1 / 0; the relevant item at rank 2.
  assert metrics.ndcg(np.array([[0.9, 0.5, 0.1]]), np.array([[False, True, False]])) == (
      pytest.approx(1 / np.log2(3), rel=1e-15))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pytrec_eval(seed):
  rng = np.random.default_rng(seed)
  num_rows, num_cols = 7, 30
  scores = rng.permutation(num_rows * num_cols).reshape(num_rows, num_cols) / 7.0  # distinct
  relevance = rng.integers(0, 4, (num_rows, num_cols))
  relevance[:, 0] = np.maximum(relevance[:, 0], 1)  # every query has a relevant doc
  # trec_eval's nDCG uses the qrel value as the gain (log2(rank + 1) discount
  # alike), so the qrels carry our gains 2^rel - 1 = 0, 1, 3, 7.
  qrels = {f"q{i}": {f"d{j}": int(2**relevance[i, j] - 1) for j in range(num_cols)}
           for i in range(num_rows)}
  run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(num_cols)}
         for i in range(num_rows)}
  trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg", "ndcg_cut"}).evaluate(run)
  per_row = metrics.ndcg_per_row(scores, relevance)
  np.testing.assert_allclose(per_row, [trec[f"q{i}"]["ndcg"] for i in range(num_rows)],
                             rtol=1e-12)
  for k in (5, 10, 15, 20):
    expected = [trec[f"q{i}"][f"ndcg_cut_{k}"] for i in range(num_rows)]
    np.testing.assert_allclose(metrics.ndcg_per_row(scores, relevance, k=k), expected,
                               rtol=1e-12)
    assert metrics.ndcg(scores, relevance, k=k) == pytest.approx(np.mean(expected), rel=1e-12)


def test_ties_and_real_valued_relevance_vs_reference(tiny_chunks):
  rng = np.random.default_rng(3)
  scores = rng.integers(0, 4, (9, 40)).astype(np.float32)  # many ties, incl. at the cut
  relevance = rng.random((9, 40)) * (rng.random((9, 40)) < 0.3)  # real-valued, sparse
  relevance[:, 5] = 0.25
  for k in (None, 1, 3, 8, 40, 100):
    expected = [reference_ndcg_row(s, r, k) for s, r in zip(scores, relevance)]
    np.testing.assert_allclose(metrics.ndcg_per_row(scores, relevance, k=k), expected,
                               rtol=1e-12)


def test_official_ties_rank_by_reversed_argsort_vs_reference(tiny_chunks):
  rng = np.random.default_rng(5)
  scores = rng.integers(0, 3, (7, 30)).astype(np.float64)
  relevance = rng.random((7, 30))
  for k in (None, 1, 5):
    expected = []
    for s, r in zip(scores, relevance):  # the official evaluation's ranking order
      order = np.argsort(s)[::-1][:len(s) if k is None else k]
      ideal = np.sort(r)[::-1][:len(order)]
      expected.append(sum((2.0**r[j] - 1) / np.log2(p + 2) for p, j in enumerate(order))
                      / sum((2.0**g - 1) / np.log2(p + 2) for p, g in enumerate(ideal)))
    np.testing.assert_allclose(
        metrics.ndcg_per_row(scores, relevance, k=k, ties="official"), expected, rtol=1e-12)
  assert metrics.ndcg(scores, relevance, ties="official") != metrics.ndcg(scores, relevance)
  both = metrics.ndcg_both_directions(scores, relevance, ties="official")
  assert both["ndcg_i2t"] == pytest.approx(metrics.ndcg(scores, relevance, ties="official"))
  with pytest.raises(ValueError, match="ties"):
    metrics.ndcg(scores, relevance, ties="random")


def test_both_directions_is_rows_and_columns():
  rng = np.random.default_rng(4)
  sims = rng.standard_normal((6, 18))
  relevance = rng.integers(0, 3, (6, 18))
  relevance[np.arange(6), np.arange(6)] = 2
  relevance[np.arange(18) // 3, np.arange(18)] = 2  # every row and column has a positive
  for k in (None, 4):
    result = metrics.ndcg_both_directions(jnp.asarray(sims), jnp.asarray(relevance), k=k)
    assert result["ndcg_i2t"] == pytest.approx(
        np.mean([reference_ndcg_row(s, r, k) for s, r in zip(sims, relevance)]), rel=1e-12)
    assert result["ndcg_t2i"] == pytest.approx(
        np.mean([reference_ndcg_row(s, r, k) for s, r in zip(sims.T, relevance.T)]), rel=1e-12)


def test_rows_without_relevant_items_are_left_out():
  scores = np.array([[0.3, 0.2, 0.1], [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]])
  relevance = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0]])
  per_row = metrics.ndcg_per_row(scores, relevance)
  assert per_row[0] == 1.0 and per_row[1] == pytest.approx(0.5) and np.isnan(per_row[2])
  assert metrics.ndcg(scores, relevance) == pytest.approx(0.75)  # mean of rows 0 and 1
  assert np.isnan(metrics.ndcg(scores, np.zeros((3, 3))))


def test_bad_inputs():
  scores, relevance = np.zeros((2, 3)), np.ones((2, 3))
  for bad_k in (0, -1, 1.5, True):
    with pytest.raises(ValueError, match="`k`"):
      metrics.ndcg(scores, relevance, k=bad_k)
  with pytest.raises(ValueError, match="same shape"):
    metrics.ndcg(scores, np.ones((3, 2)))
  with pytest.raises(ValueError, match=">= 0"):
    metrics.ndcg(scores, -relevance)
  with pytest.raises(ValueError, match="NaN"):
    metrics.ndcg(np.array([[0.0, np.nan]]), np.ones((1, 2)))
  with pytest.raises(ValueError, match="NaN"):
    metrics.ndcg(np.ones((1, 2)), np.array([[0.0, np.nan]]))
  with pytest.raises(ValueError, match="2-D"):
    metrics.ndcg_both_directions(np.zeros(3), np.zeros(3))


@pytest.mark.parametrize("integer_scores", [False, True])
def test_top_k_indices_is_stable_descending_sort(integer_scores, tiny_chunks):
  rng = np.random.default_rng(5)
  for _ in range(30):
    rows, cols = rng.integers(1, 7), rng.integers(1, 25)
    scores = (rng.integers(-2, 3, (rows, cols)) if integer_scores
              else rng.standard_normal((rows, cols)).astype(np.float32))
    for matrix in (scores, scores.T):  # the transpose exercises strided rows
      expected = np.argsort(-matrix.astype(np.float64), axis=1, kind="stable")
      for k in (None, 1, 2, 5, cols, cols + 3):
        width = matrix.shape[1] if k is None else min(k, matrix.shape[1])
        np.testing.assert_array_equal(metrics.top_k_indices(matrix, k), expected[:, :width])


def test_top_k_indices_hand_example():
  np.testing.assert_array_equal(
      metrics.top_k_indices(np.array([[0.1, 0.9, 0.5, 0.9], [3, 3, 3, 3]]), 3),
      [[1, 3, 2], [0, 1, 2]])
