"""The "sorted" smooth ranks (O(N log N) per row) against the dense oracle.

Float64 values and gradients (w.r.t. scores and tau) of S-NDCG rows must match
`dense_smooth_ndcg_rows` (the literal clipped-sigmoid formula, itself tested
against the NumPy reference in test_losses.py) to 1e-6 relative; float32 must
be as close to the float64 oracle as the chunked kernel is. For N = 1024 the
oracle is the chunked kernel (the dense one would need N^3 floats per row).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax import losses
from itr_jax.losses import logistic_fits
from itr_jax.losses import ranks
from itr_jax.losses import smooth_ndcg
from itr_jax.losses import sorted_ranks
from itr_jax.training import defaults
from itr_jax.training import train_step

TAUS = (1e-3, 0.01, 0.05, 1.0)
ROWS = 6


def rows_with_ties(n, seed, dtype=np.float64):
  """[ROWS, n] scores in [-1, 1]: random, rounded (many exact ties), all equal,
  two values only, and relevance with zeros (and one all-zero row)."""
  rng = np.random.default_rng(seed)
  s = rng.uniform(-1, 1, (ROWS, n))
  s[1] = np.round(s[1], 1)                 # ~21 distinct values
  s[2] = 0.25                              # all equal
  s[3] = np.where(rng.uniform(size=n) < 0.5, -1.0, 1.0)
  s[4] = np.round(s[4] * 1e3) / 1e3        # near-ties at tau = 1e-3
  rel = np.where(rng.uniform(size=(ROWS, n)) < 0.3, 0.0, rng.uniform(size=(ROWS, n)))
  rel[5] = 0.0
  return s.astype(dtype), rel.astype(dtype)


def ndcg_and_grads(method, dtype):
  """jit(S-NDCG rows, d sum / d scores, d sum / d tau), tau traced (one compile)."""
  def rows(s, rel, tau):
    if method == "dense":
      return losses.dense_smooth_ndcg_rows(s, rel, tau=tau)
    return losses.smooth_ndcg_rows(s, rel, tau=tau, rank_method=method)

  def f(s, rel, tau):
    weights = jnp.linspace(1.0, 2.0, s.shape[0], dtype=dtype)  # rows differ
    value, grads = jax.value_and_grad(
        lambda s, tau: jnp.sum(weights * rows(s, rel, tau)), argnums=(0, 1))(s, tau)
    return rows(s, rel, tau), grads

  return jax.jit(f)


def relative_error(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)


@pytest.mark.parametrize("n, oracle", [(2, "dense"), (3, "dense"), (17, "dense"),
                                       (256, "dense"), (1024, "chunked")])
def test_float64_values_and_gradients_match_oracle(n, oracle):
  with jax.enable_x64(True):
    s, rel = rows_with_ties(n, seed=n)
    got_fn, want_fn = ndcg_and_grads("sorted", jnp.float64), ndcg_and_grads(oracle, jnp.float64)
    for tau in TAUS:
      (ndcg, (d_s, d_tau)) = got_fn(s, rel, jnp.float64(tau))
      (ref, (ref_s, ref_tau)) = want_fn(s, rel, jnp.float64(tau))
      assert ndcg.dtype == jnp.float64
      assert relative_error(ndcg, ref) <= 1e-6, tau
      for q in range(ROWS - 1):  # per row: rows have different gradient scales
        if np.abs(ref_s[q]).max() > 0:
          assert relative_error(d_s[q], ref_s[q]) <= 1e-6, (tau, q)
      assert np.abs(ref_s).max() > 0
      # d/dtau of a fully saturated set of rows is 0 under the oracle's clip
      # at |x| = 50 and e^{-50}-small without it (both kernels).
      assert abs(d_tau - ref_tau) <= 1e-6 * abs(ref_tau) + 1e-9, tau


@pytest.mark.parametrize("row_block, idcg, scan", [(2, "tied", "sequential"),
                                                  (4, "sorted", "associative")])
def test_row_blocks_match_oracle(row_block, idcg, scan):
  # 6 rows in blocks of 2 (3 blocks) or 4 (padded to 8), forward and backward,
  # for the rank-level kernel (both scans) and the fused S-NDCG rows.
  with jax.enable_x64(True):
    s, rel = rows_with_ties(17, seed=11)
    w = np.random.default_rng(12).uniform(1.0, 2.0, s.shape)

    def check(got_fn, want_fn):  # jit: eager autodiff compiles every primitive
      got = jax.jit(jax.value_and_grad(got_fn, argnums=(0, 1)))(s, 0.05)
      want = jax.jit(jax.value_and_grad(want_fn, argnums=(0, 1)))(s, 0.05)
      for g, ref in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())

    check(lambda s, tau: jnp.sum(w * jnp.log(sorted_ranks.sorted_smooth_ranks(
              s / tau, row_block, scan))),
          lambda s, tau: jnp.sum(w * jnp.log(ranks.dense_smooth_ranks(s, tau=tau))))
    ideal = losses.ideal_dcg(jnp.asarray(rel), idcg=idcg)
    check(lambda s, tau: jnp.sum(w[:, 0] * smooth_ndcg._sorted_ndcg_rows(
              s, tau, jnp.asarray(rel), ideal, row_block)),
          lambda s, tau: jnp.sum(w[:, 0] * losses.dense_smooth_ndcg_rows(
              s, rel, tau=tau, idcg=idcg)))


def test_saturated_scores_at_tiny_tau():
  # Scores at +-1 with tau = 1e-4: every sigmoid is 0, 1/2 or 1.
  with jax.enable_x64(True):
    s = np.where(np.random.default_rng(1).uniform(size=(3, 40)) < 0.4, -1.0, 1.0)
    rel = np.random.default_rng(2).uniform(size=(3, 40))
    got = ndcg_and_grads("sorted", jnp.float64)(s, rel, jnp.float64(1e-4))
    want = ndcg_and_grads("dense", jnp.float64)(s, rel, jnp.float64(1e-4))
    r = jax.jit(lambda s: ranks.smooth_ranks(s, tau=1e-4, method="sorted"))(s)
    # Ties only: sum_m G_m = g(0) = 1/2 up to the fit's 7e-9 relative error.
    np.testing.assert_allclose(
        r, jax.jit(lambda s: ranks.dense_smooth_ranks(s, tau=1e-4))(s), rtol=1e-7)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for g, ref in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
      # d/dtau is exactly 0 under the oracle's clip; ours is float64 rounding
      # of sum_p du_p * u_p / tau with |u| = 1e4 (4e-9).
      np.testing.assert_allclose(g, ref, rtol=0, atol=1e-6 * np.abs(ref).max() + 1e-8)


def test_float32_is_as_close_to_the_oracle_as_the_chunked_kernel():
  n = 256
  s, rel = rows_with_ties(n, seed=7)
  with jax.enable_x64(True):
    want = ndcg_and_grads("dense", jnp.float64)
    oracle = {tau: want(s, rel, jnp.float64(tau)) for tau in TAUS}
  eps = np.finfo(np.float32).eps

  def errors(method, tau):
    ndcg, (d_s, d_tau) = ndcg_and_grads(method, jnp.float32)(
        s.astype(np.float32), rel.astype(np.float32), jnp.float32(tau))
    ref, (ref_s, ref_tau) = oracle[tau]
    assert ndcg.dtype == jnp.float32
    rows = [relative_error(d_s[q], ref_s[q]) for q in range(ROWS - 1)]
    return relative_error(ndcg, ref), np.array(rows), relative_error(d_tau, ref_tau)

  # The gradient sums sum_m H_m D_m with alternating H_m: float32 rounding of
  # the states D_m is amplified up to sum |H_m| / h(0) ~ 140 times (float64:
  # 1e-14, far below the 1e-6 above). Measured (tau = 1e-3 ... 1): rows of
  # tied scores 3e-6 to 7e-6 (~60 eps) vs the chunked kernel's 2e-7 to 3e-7
  # (~2 eps); random rows 1e-6 to 7e-6, where both include the 1/tau-amplified
  # rounding of the float32 inputs (chunked: 3e-7 to 8e-6).
  amplification = np.abs(logistic_fits.H).sum() / 0.25
  assert 100 < amplification < 200
  for tau in TAUS:
    (ndcg, rows, d_tau), (c_ndcg, c_rows, c_d_tau) = errors("sorted", tau), errors("chunked", tau)
    assert ndcg <= max(4 * c_ndcg, 16 * eps), tau
    assert np.all(rows <= np.maximum(4 * c_rows, amplification * eps)), (tau, rows, c_rows)
    # d/dtau sums du_p * u_p with |u| up to 1 / tau: ill-conditioned for both
    # (measured: sorted up to 4e-5, chunked 1e-6 at tau = 0.01).
    assert d_tau <= 4 * c_d_tau + 1e-4, (tau, d_tau, c_d_tau)


def test_bfloat16_scores_rank_in_float32():
  s, rel = rows_with_ties(64, seed=3, dtype=np.float32)
  bf16 = jnp.asarray(s, jnp.bfloat16)
  got = jax.jit(lambda x: ranks.smooth_ranks(x, tau=0.05, method="sorted"))(bf16)
  assert got.dtype == jnp.float32
  with jax.enable_x64(True):
    want = jax.jit(lambda x: ranks.dense_smooth_ranks(x, tau=0.05))(
        np.asarray(bf16.astype(jnp.float32), np.float64))
  # float32 rounding, amplified on tied rows (~16x: sum |G_m| / g(0)).
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=2e-5)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(losses.smooth_ndcg_rows(
      x, rel, tau=0.05, rank_method="sorted"))))(bf16)
  ref = jax.jit(jax.grad(lambda x: jnp.sum(losses.smooth_ndcg_rows(x, rel, tau=0.05))))(bf16)
  assert grad.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(grad, np.float32), np.asarray(ref, np.float32),
                             rtol=1e-2, atol=1e-3)


def test_vmap_over_tau_and_jit():
  s, _ = rows_with_ties(33, seed=4, dtype=np.float32)
  taus = jnp.asarray([0.01, 0.05, 1.0])
  sweep = jax.jit(jax.vmap(lambda t: ranks.smooth_ranks(s, tau=t, method="sorted")))(taus)
  for i, tau in enumerate(taus):
    np.testing.assert_allclose(
        sweep[i], ranks.smooth_ranks(s, tau=float(tau), method="sorted"), rtol=1e-6)
  d_tau = jax.vmap(jax.grad(lambda t: jnp.sum(jnp.log(ranks.smooth_ranks(
      s, tau=t, method="sorted")))))(taus)
  ref = jax.vmap(jax.grad(lambda t: jnp.sum(jnp.log(ranks.smooth_ranks(
      s, tau=t)))))(taus)
  np.testing.assert_allclose(d_tau, ref, rtol=1e-4)


def test_listwise_loss_with_sorted_ranks_equals_chunked():
  s, rel = rows_with_ties(24, seed=5, dtype=np.float32)
  scores = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (24, 24)), jnp.float32)
  relevance = jnp.asarray(np.random.default_rng(7).uniform(size=(24, 24)), jnp.float32)

  def loss(method):
    return jax.jit(jax.value_and_grad(lambda x: losses.listwise_itr_loss(
        x, relevance, losses.LossOptions(tau=0.05, rank_method=method))[0]))(scores)

  (value, grad), (ref_value, ref_grad) = loss("sorted"), loss("chunked")
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, atol=1e-7)
  assert np.abs(ref_grad).max() > 1e-3


def test_sort_rows_is_a_stable_argsort_with_signed_zeros():
  u = np.array([[0.0, -0.0, -1.5, 2.0, -1.5, 0.0, np.float32(1e-38), -3e38]], np.float32)
  v, perm = sorted_ranks.sort_rows(jnp.asarray(u))
  np.testing.assert_array_equal(perm[0], np.argsort(u[0], kind="stable"))
  np.testing.assert_array_equal(v[0], np.sort(u[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sort_rows_is_a_stable_argsort_on_every_bit_pattern(dtype):
  # float32 rows go through a two-pass radix argsort of 16-bit digits: values
  # that share either digit (integers: all low digits 0; tiny numbers: all
  # high digits alike), ties, signed zeros, infinities, subnormals, extremes.
  rng = np.random.default_rng(5)
  rows = [rng.permutation(64).astype(dtype) - 20.0,
          np.round(rng.normal(size=64), 1).astype(dtype),
          (rng.normal(size=64) * 1e-40).astype(dtype),
          rng.choice(np.array([-np.inf, np.inf, -0.0, 0.0, 1.0, -1.0,
                               np.finfo(dtype).max, -np.finfo(dtype).max,
                               np.finfo(dtype).tiny, 3.0], dtype), size=64),
          rng.normal(size=64).astype(dtype)]
  u = np.stack(rows)
  # XLA on CPU treats subnormals as zero (as the scores' arithmetic does).
  flushed = np.where(np.abs(u) < np.finfo(dtype).tiny, 0.0, u)
  with jax.enable_x64(dtype == np.float64):
    v, perm = jax.jit(sorted_ranks.sort_rows)(jnp.asarray(u))
    np.testing.assert_array_equal(perm, np.argsort(flushed, axis=1, kind="stable"))
    np.testing.assert_array_equal(v, np.take_along_axis(u, np.asarray(perm), axis=1))


def test_fits_are_as_accurate_as_stated():
  # Independent check of the stored coefficients on a finer grid and a far tail.
  a = np.linspace(0.0, 120.0, 600_001)
  t = np.exp(-a)
  g, h = t / (1.0 + t), t / (1.0 + t) ** 2
  basis = np.exp(-np.outer(a, logistic_fits.LAMBDAS))
  for fit, f, rel, absolute in ((logistic_fits.G, g, logistic_fits.G_REL_ERROR,
                                 logistic_fits.G_ABS_ERROR),
                                (logistic_fits.H, h, logistic_fits.H_REL_ERROR,
                                 logistic_fits.H_ABS_ERROR)):
    error = basis @ np.asarray(fit) - f
    assert np.abs(error / f).max() <= rel * 1.01
    assert np.abs(error).max() <= absolute * 1.01
    assert rel < np.finfo(np.float32).eps / 4  # exact to float32


def test_auto_method_and_bad_methods():
  assert ranks.resolve_rank_method("auto", ranks.AUTO_SORTED_MIN_CANDIDATES - 1) == "chunked"
  assert ranks.resolve_rank_method("auto", ranks.AUTO_SORTED_MIN_CANDIDATES) == "sorted"
  assert ranks.resolve_rank_method("chunked", 10 ** 5) == "chunked"
  with pytest.raises(ValueError, match="rank_method"):
    ranks.smooth_ranks(jnp.zeros((2, 3)), method="fast")
  too_many = jax.ShapeDtypeStruct((1, sorted_ranks.MAX_CANDIDATES + 1), jnp.float32)
  with pytest.raises(ValueError, match='use rank_method="chunked"'):
    jax.eval_shape(lambda x: ranks.smooth_ranks(x, method="sorted"), too_many)
  config = defaults.base_config()
  assert config.loss.rank_method == "auto"
  assert train_step.check_loss_config(config.loss).rank_method == "auto"
  config.loss.rank_method = "fastest"
  with pytest.raises(ValueError, match="config.loss.*rank_method"):
    train_step.check_loss_config(config.loss)
