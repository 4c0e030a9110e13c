"""Recall@K / medr / meanr and the COCO protocols against a loop-based reference."""
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax import metrics
from itr_jax.metrics import _checks


# --- Independent reference: the classic per-query argsort evaluation (float64).
def _summary(ranks):
  ranks = np.asarray(ranks, dtype=np.float64)
  return dict(r1=100.0 * len(np.where(ranks < 1)[0]) / len(ranks),
              r5=100.0 * len(np.where(ranks < 5)[0]) / len(ranks),
              r10=100.0 * len(np.where(ranks < 10)[0]) / len(ranks),
              medr=np.floor(np.median(ranks)) + 1,
              meanr=ranks.mean() + 1)


def reference_i2t(sims, cpi):
  sims = np.asarray(sims, dtype=np.float64)
  ranks = []
  for i in range(sims.shape[0]):
    order = list(np.argsort(sims[i])[::-1])
    ranks.append(min(order.index(c) for c in range(cpi * i, cpi * (i + 1))))
  return _summary(ranks)


def reference_t2i(sims, cpi):
  sims = np.asarray(sims, dtype=np.float64)
  ranks = []
  for c in range(sims.shape[1]):
    order = list(np.argsort(sims[:, c])[::-1])
    ranks.append(order.index(c // cpi))
  return _summary(ranks)


@pytest.fixture
def tiny_chunks(monkeypatch):
  """Forces many row chunks (with ragged last chunk) in every metric."""
  monkeypatch.setattr(_checks, "CHUNK_ELEMENTS", 37)


@pytest.mark.parametrize("num_images,cpi,seed", [
    (1, 5, 0), (2, 5, 1), (7, 1, 2), (13, 3, 3), (40, 5, 4), (64, 1, 5), (25, 5, 6)])
def test_matches_loop_reference_exactly(num_images, cpi, seed):
  rng = np.random.default_rng(seed)
  # Shift the own block up a little so that R@K is not trivially 0.
  sims = rng.standard_normal((num_images, num_images * cpi))
  sims += 1.5 * np.kron(np.eye(num_images), np.ones((1, cpi)))
  assert metrics.i2t(sims, captions_per_image=cpi) == reference_i2t(sims, cpi)
  assert metrics.t2i(sims, captions_per_image=cpi) == reference_t2i(sims, cpi)


def test_chunking_does_not_change_results(tiny_chunks):
  rng = np.random.default_rng(7)
  sims = rng.standard_normal((23, 115)) + np.kron(np.eye(23), np.ones((1, 5)))
  assert metrics.i2t(sims) == reference_i2t(sims, 5)
  assert metrics.t2i(sims) == reference_t2i(sims, 5)


def test_float32_and_jax_inputs():
  rng = np.random.default_rng(8)
  sims = (rng.standard_normal((30, 150)) + np.kron(np.eye(30), np.ones((1, 5)))).astype(np.float32)
  expected_i2t, expected_t2i = reference_i2t(sims, 5), reference_t2i(sims, 5)
  assert metrics.i2t(sims) == expected_i2t
  assert metrics.t2i(jnp.asarray(sims)) == expected_t2i


def test_hand_computed_two_images_ten_captions():
  sims = np.array([
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.8, 0.05, 0.01, 0.02],   # own best 0.5; 0.9, 0.8 beat it
      [0.3, 0.1, 0.0, 0.6, 0.2, 0.95, 0.7, 0.01, 0.03, 0.04],  # own best 0.95: rank 0
  ])
  np.testing.assert_array_equal(metrics.i2t_ranks(sims), [2, 0])
  # Caption c against the other image's score in the same column.
  np.testing.assert_array_equal(metrics.t2i_ranks(sims), [1, 0, 0, 1, 0, 0, 1, 1, 0, 0])
  assert metrics.i2t(sims) == dict(r1=50.0, r5=100.0, r10=100.0, medr=2.0, meanr=2.0)
  assert metrics.t2i(sims) == dict(r1=60.0, r5=100.0, r10=100.0, medr=1.0, meanr=1.4)


def test_hand_computed_staircase_ranks_0_to_11():
  # Column c: images i < c score 1, image c scores 0.5, images i > c score 0,
  # so exactly c images beat caption c's own image (and 11 - i beat it in row i).
  n = 12
  i, c = np.indices((n, n))
  sims = np.where(i < c, 1.0, np.where(i == c, 0.5, 0.0))
  np.testing.assert_array_equal(metrics.t2i_ranks(sims, captions_per_image=1), np.arange(n))
  np.testing.assert_array_equal(metrics.i2t_ranks(sims, captions_per_image=1), n - 1 - np.arange(n))
  expected = dict(r1=100 / 12, r5=500 / 12, r10=1000 / 12, medr=6.0, meanr=6.5)
  for result in (metrics.t2i(sims, captions_per_image=1), metrics.i2t(sims, captions_per_image=1)):
    assert result.keys() == expected.keys()
    np.testing.assert_allclose(list(result.values()), list(expected.values()), rtol=1e-15)


def test_ties_with_ground_truth_are_optimistic():
  # Documented behaviour: a candidate tied with the ground truth does not count.
  sims = np.zeros((3, 15))
  assert metrics.i2t(sims)["r1"] == 100.0
  assert metrics.t2i(sims)["meanr"] == 1.0
  sims[0, 7] = 1.0  # strictly above image 0's captions, and above image 1 for caption 7
  np.testing.assert_array_equal(metrics.i2t_ranks(sims), [1, 0, 0])
  np.testing.assert_array_equal(metrics.t2i_ranks(sims)[5:10], [0, 0, 1, 0, 0])


@pytest.mark.parametrize("num_images,cpi,seed", [(3, 5, 0), (7, 5, 1), (40, 5, 2), (30, 1, 3)])
def test_official_ties_match_the_official_argsort_loop(num_images, cpi, seed, tiny_chunks):
  """Integer scores: many ties with the ground truth, rows longer and shorter
  than 16 (NumPy's argsort switches algorithm there)."""
  rng = np.random.default_rng(seed)
  sims = rng.integers(0, 3, (num_images, num_images * cpi)).astype(np.float64)
  assert metrics.i2t(sims, captions_per_image=cpi, ties="official") == reference_i2t(sims, cpi)
  assert metrics.t2i(sims, captions_per_image=cpi, ties="official") == reference_t2i(sims, cpi)
  optimistic = metrics.i2t_ranks(sims, captions_per_image=cpi)
  official = metrics.i2t_ranks(sims, captions_per_image=cpi, ties="official")
  assert np.all(official >= optimistic) and np.any(official > optimistic)


def test_official_ties_hand_computed():
  # All scores tied. np.argsort([1, 1, 1, 1]) = [0, 1, 2, 3] (stable for short
  # rows), reversed: the last column ranks first.
  sims = np.ones((2, 4))
  np.testing.assert_array_equal(
      metrics.i2t_ranks(sims, captions_per_image=2, ties="official"), [2, 0])
  np.testing.assert_array_equal(
      metrics.t2i_ranks(sims, captions_per_image=2, ties="official"), [1, 1, 0, 0])
  np.testing.assert_array_equal(metrics.i2t_ranks(sims, captions_per_image=2), [0, 0])
  np.testing.assert_array_equal(metrics.t2i_ranks(sims, captions_per_image=2), [0, 0, 0, 0])
  result = metrics.evaluate_retrieval(sims, captions_per_image=2, ties="official")
  assert (result["i2t_r1"], result["t2i_r1"], result["t2i_meanr"]) == (50.0, 50.0, 1.5)
  assert metrics.coco_1k(np.ones((2, 10)), num_folds=2, ties="official")["t2i_r1"] == 100.0
  with pytest.raises(ValueError, match="ties"):
    metrics.i2t(sims, captions_per_image=2, ties="pessimistic")


def test_rsum():
  a = dict(r1=10.0, r5=20.0, r10=30.0, medr=5.0, meanr=9.0)
  b = dict(r1=1.0, r5=2.0, r10=3.0, medr=50.0, meanr=90.0)
  assert metrics.rsum(a, b) == 66.0
  with pytest.raises(ValueError, match="r5"):
    metrics.rsum({"r1": 1.0}, b)


def test_evaluate_retrieval_and_coco_5k_are_flat_dicts():
  rng = np.random.default_rng(9)
  sims = rng.standard_normal((20, 100)) + np.kron(np.eye(20), np.ones((1, 5)))
  result = metrics.evaluate_retrieval(sims)
  ref_i2t, ref_t2i = reference_i2t(sims, 5), reference_t2i(sims, 5)
  expected = {f"i2t_{k}": v for k, v in ref_i2t.items()}
  expected.update({f"t2i_{k}": v for k, v in ref_t2i.items()})
  expected["rsum"] = sum(ref_i2t[k] + ref_t2i[k] for k in ("r1", "r5", "r10"))
  assert result == pytest.approx(expected, rel=1e-15)
  assert list(result) == list(expected)
  assert metrics.coco_5k(sims) == result


def test_coco_1k_averages_five_diagonal_folds(tiny_chunks):
  rng = np.random.default_rng(10)
  sims = rng.standard_normal((25, 125)) + 2 * np.kron(np.eye(25), np.ones((1, 5)))
  # Off-fold entries must not matter: make them huge.
  fold_mask = np.kron(np.eye(5), np.ones((5, 25))).astype(bool)
  sims[~fold_mask] = 100.0
  folds = []
  for f in range(5):
    block = sims[5 * f:5 * (f + 1), 25 * f:25 * (f + 1)]
    i2t_f, t2i_f = reference_i2t(block, 5), reference_t2i(block, 5)
    folds.append([i2t_f[k] for k in i2t_f] + [t2i_f[k] for k in t2i_f]
                 + [sum(i2t_f[k] + t2i_f[k] for k in ("r1", "r5", "r10"))])
  expected = np.mean(folds, axis=0)
  per_fold = metrics.coco_1k_folds(sims)
  assert len(per_fold) == 5
  for got, want in zip(per_fold, folds):
    np.testing.assert_allclose(list(got.values()), want, rtol=1e-12)
  result = metrics.coco_1k(sims)
  np.testing.assert_allclose(list(result.values()), expected, rtol=1e-12)
  assert list(result)[:2] == ["i2t_r1", "i2t_r5"] and list(result)[-1] == "rsum"


@pytest.mark.parametrize("fn", [metrics.i2t, metrics.t2i, metrics.evaluate_retrieval,
                                metrics.coco_1k])
def test_bad_inputs(fn):
  with pytest.raises(ValueError, match="captions_per_image"):
    fn(np.zeros((3, 14)))  # 14 != 3 * 5
  with pytest.raises(ValueError, match="captions_per_image"):
    fn(np.zeros((3, 3)), captions_per_image=0)
  with pytest.raises(ValueError, match="captions_per_image"):
    fn(np.zeros((3, 3)), captions_per_image=1.0)
  with pytest.raises(ValueError, match="2-D"):
    fn(np.zeros(15))
  with pytest.raises(ValueError, match="no image rows"):
    fn(np.zeros((0, 0)))
  with pytest.raises(ValueError, match="real numbers"):
    fn(np.array([["a"] * 5]))
  nan_sims = np.zeros((5, 25))
  nan_sims[4, 22] = np.nan  # inside image 4's own block, so also in its COCO 1K fold
  with pytest.raises(ValueError, match="NaN"):
    fn(nan_sims)


def test_coco_1k_bad_folds():
  with pytest.raises(ValueError, match="num_folds"):
    metrics.coco_1k(np.zeros((7, 35)))
  with pytest.raises(ValueError, match="num_folds"):
    metrics.coco_1k(np.zeros((5, 25)), num_folds=0)


def test_summarize_ranks_checks():
  assert metrics.summarize_ranks([0, 0, 3, 12]) == dict(r1=50.0, r5=75.0, r10=75.0,
                                                        medr=2.0, meanr=4.75)
  with pytest.raises(ValueError, match="0-based"):
    metrics.summarize_ranks([1, -1])
  with pytest.raises(ValueError, match="non-empty"):
    metrics.summarize_ranks([])
