"""Tests for itr_jax.losses against a float64 NumPy reference and hand-computed cases.

The reference below is written straight from the equations (dense [B, B, B]
tensors, explicit rank Jacobian, explicit loops for the triplet loss); it
shares no code with the library, and its gradient is itself checked against
finite differences.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax import losses

# ---------------------------------------------------------------------------
# float64 NumPy reference
# ---------------------------------------------------------------------------


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(np.clip(-x, -50.0, 50.0)))


def np_sigmoid_grad(x):
  # d/dx of the official clipped sigmoid: 0 where the exponent is clipped.
  s = np_sigmoid(x)
  return np.where(np.abs(x) <= 50.0, s * (1.0 - s), 0.0)


def np_smooth_ranks_and_jacobian(S, tau):
  """r[q, j] and J[q, j, k] = d r[q, j] / d S[q, k]."""
  n = S.shape[1]
  x = (S[:, None, :] - S[:, :, None]) / tau  # x[q, j, k] = (S_qk - S_qj) / tau
  off = 1.0 - np.eye(n)
  ranks = 1.0 + np.sum(np_sigmoid(x) * off, axis=-1)
  d = np_sigmoid_grad(x) / tau * off  # d r_qj / d S_qk for k != j
  jac = d.copy()
  idx = np.arange(n)
  jac[:, idx, idx] = -d.sum(axis=-1)  # d r_qj / d S_qj
  return ranks, jac


def np_hard_ranks(V):
  return 1.0 + np.sum(V[:, None, :] > V[:, :, None], axis=-1)


def np_idcg(R, mode):
  gains = 2.0 ** R - 1.0
  if mode == "tied":
    return np.sum(gains / np.log2(1.0 + np_hard_ranks(R)), axis=-1)
  ordered = -np.sort(-R, axis=-1)
  pos = np.arange(1, R.shape[1] + 1)
  return np.sum((2.0 ** ordered - 1.0) / np.log2(1.0 + pos), axis=-1)


def np_ndcg_rows(S, R, tau, mode):
  """Smooth NDCG per row, its gradient d ndcg_q / d S[q, :], and hard NDCG."""
  gains = 2.0 ** R - 1.0
  idcg = np_idcg(R, mode)
  safe = np.where(idcg > 0, idcg, 1.0)
  ranks, jac = np_smooth_ranks_and_jacobian(S, tau)
  log = np.log2(1.0 + ranks)
  ndcg = np.where(idcg > 0, np.sum(gains / log, -1) / safe, 0.0)
  d_rank = -gains / ((1.0 + ranks) * math.log(2.0) * log ** 2)
  d_rank = np.where(idcg[:, None] > 0, d_rank / safe[:, None], 0.0)
  grad = np.einsum("qj,qjk->qk", d_rank, jac)
  hard = np.sum(gains / np.log2(1.0 + np_hard_ranks(S)), -1)
  hard = np.where(idcg > 0, hard / safe, 0.0)
  return ndcg, grad, hard


def np_triplet(S, margin, hardest):
  """VSE++ loss and its gradient, by explicit loops."""
  b = S.shape[0]
  loss, grad = 0.0, np.zeros_like(S)
  for transpose in (False, True):
    M = S.T if transpose else S
    for q in range(b):
      hinges = {j: max(0.0, margin + M[q, j] - M[q, q]) for j in range(b) if j != q}
      chosen = [max(hinges, key=hinges.get)] if hardest else list(hinges)
      for j in chosen:
        loss += hinges[j] / (2 * b)
        if hinges[j] > 0:
          gq = np.zeros_like(S)
          gq[q, j] += 1.0 / (2 * b)
          gq[q, q] -= 1.0 / (2 * b)
          grad += gq.T if transpose else gq
  return loss, grad


def np_listwise(S, R, *, margin=0.2, tau=0.01, weight=0.5, t2i_relevance="paper",
                idcg="tied", hardest=True):
  """Loss, aux dict and gradient w.r.t. S of listwise_itr_loss."""
  b = S.shape[0]
  pair, pair_grad = np_triplet(S, margin, hardest)
  R_t2i = R if t2i_relevance == "paper" else R.T
  n_i2t, g_i2t, h_i2t = np_ndcg_rows(S, R, tau, idcg)
  n_t2i, g_t2i, h_t2i = np_ndcg_rows(S.T, R_t2i, tau, idcg)
  listwise = ((1 - n_i2t.mean()) + (1 - n_t2i.mean())) / 2
  list_grad = -(g_i2t + g_t2i.T) / (2 * b)
  loss = (1 - weight) * pair + weight * listwise
  grad = (1 - weight) * pair_grad + weight * list_grad
  aux = dict(pairwise=pair, listwise=listwise, ndcg_i2t=n_i2t.mean(),
             ndcg_t2i=n_t2i.mean(), hard_ndcg_i2t=h_i2t.mean(),
             hard_ndcg_t2i=h_t2i.mean())
  return loss, aux, grad


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_batch(b, seed, dim=16, levels=None):
  """L2-normalised image/caption embeddings (float64) and a relevance matrix.

  Captions are noisy copies of their images so that some hinges are active
  and some are not. `levels` quantises the relevance to create ties.
  """
  rng = np.random.default_rng(seed)
  v = _normalize(rng.normal(size=(b, dim)))
  t = _normalize(v + 0.8 * _normalize(rng.normal(size=(b, dim))))
  rel = rng.uniform(size=(b, b))
  if levels:
    rel = np.round(rel * levels) / levels
  np.fill_diagonal(rel, 1.0)
  return v, t, rel


STATIC = ("t2i_relevance", "idcg", "hardest", "chunk_size")


@functools.partial(jax.jit, static_argnames=STATIC)
def jit_loss(scores, relevance, margin, tau, weight, **static):
  # Hyperparameters are traced, so one compilation serves every value.
  return losses.listwise_itr_loss(scores, relevance, losses.LossOptions(margin=margin, tau=tau, weight=weight, **static))


@functools.partial(jax.jit, static_argnames=STATIC)
def jit_grad_embeddings(v, t, relevance, margin, tau, weight, **static):
  def f(v, t):
    return losses.listwise_itr_loss(v @ t.T, relevance, losses.LossOptions(margin=margin, tau=tau, weight=weight, **static))[0]
  return jax.grad(f, argnums=(0, 1))(v, t)


def f32(x):
  return jnp.asarray(x, jnp.float32)


# ---------------------------------------------------------------------------
# the reference itself
# ---------------------------------------------------------------------------


def test_reference_gradient_matches_finite_differences():
  v, t, rel = make_batch(5, seed=0, levels=4)
  S = v @ t.T
  kw = dict(margin=0.2, tau=0.05, weight=0.6, t2i_relevance="transpose", idcg="sorted")
  _, _, grad = np_listwise(S, rel, **kw)
  eps = 1e-6
  fd = np.zeros_like(S)
  for i in range(5):
    for j in range(5):
      d = np.zeros_like(S)
      d[i, j] = eps
      fd[i, j] = (np_listwise(S + d, rel, **kw)[0] - np_listwise(S - d, rel, **kw)[0]) / (2 * eps)
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
  assert np.abs(grad).max() > 1e-2  # the check is not vacuous


# ---------------------------------------------------------------------------
# ranks
# ---------------------------------------------------------------------------


def _sig(x):
  return 1.0 / (1.0 + math.exp(-x))


def test_smooth_ranks_hand_computed():
  s = jnp.array([[0.3, 0.1, 0.2]])
  expected = [1 + _sig(-4) + _sig(-2),   # (0.1-0.3)/0.05, (0.2-0.3)/0.05
              1 + _sig(4) + _sig(2),
              1 + _sig(2) + _sig(-2)]
  np.testing.assert_allclose(losses.smooth_ranks(s, tau=0.05)[0], expected, rtol=1e-6)
  np.testing.assert_allclose(losses.dense_smooth_ranks(s, tau=0.05)[0], expected, rtol=1e-6)


def test_official_sigmoid_clips_value_and_gradient():
  x = jnp.array([-80.0, -50.0, 0.0, 3.0, 51.0, 80.0])
  np.testing.assert_allclose(losses.official_sigmoid(x), np_sigmoid(np.asarray(x, np.float64)),
                             rtol=1e-6, atol=1e-30)
  grad = jax.vmap(jax.grad(losses.official_sigmoid))(x)
  assert grad[0] == 0 and grad[4] == 0 and grad[5] == 0
  np.testing.assert_allclose(grad[2:4], [0.25, _sig(3) * (1 - _sig(3))], rtol=1e-6)


def test_hard_ranks_with_ties():
  v = jnp.array([[0.2, 0.9, 0.2, 0.5, 0.9], [1.0, 1.0, 1.0, 1.0, 1.0]])
  np.testing.assert_array_equal(losses.hard_ranks(v),
                                [[4, 1, 4, 3, 1], [1, 1, 1, 1, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hard_ranks_signed_zeros_infinities_and_ties_match_numpy(dtype):
  # hard_ranks sorts integer images of the floats: -0.0 and +0.0 must still
  # tie, negatives order backwards in their bits, infinities at the ends.
  rng = np.random.default_rng(7)
  v = rng.choice(np.array([-np.inf, -2.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 3.0, np.inf]),
                 size=(5, 40)).astype(dtype)
  v[0] = rng.normal(size=40)
  got = losses.hard_ranks(jnp.asarray(v))
  np.testing.assert_array_equal(got, np_hard_ranks(v.astype(np.float64)))
  assert losses.hard_ranks(jnp.array([[-0.0, 0.0, -1.0]])).tolist() == [[1.0, 1.0, 3.0]]


@pytest.mark.parametrize("n,chunk", [(7, 3), (33, 32), (40, 8), (5, 100)])
@pytest.mark.parametrize("tau", [0.005, 0.05])
def test_chunked_ranks_match_reference_and_dense_autodiff(n, chunk, tau):
  # Chunks need not divide n; ranks and the custom VJP (w.r.t. scores AND tau)
  # must match the float64 reference and autodiff of the dense oracle.
  rng = np.random.default_rng(n)
  S = rng.normal(size=(6, n)) * 0.2
  cot = rng.normal(size=(6, n))
  ref_ranks, jac = np_smooth_ranks_and_jacobian(S, tau)
  ref_grad = np.einsum("qj,qjk->qk", cot, jac)

  def chunked(s, t):
    return jnp.sum(f32(cot) * losses.smooth_ranks(s, tau=t, chunk_size=chunk))

  def dense(s, t):
    return jnp.sum(f32(cot) * losses.dense_smooth_ranks(s, tau=t))

  np.testing.assert_allclose(losses.smooth_ranks(f32(S), tau=tau, chunk_size=chunk),
                             ref_ranks, rtol=1e-5)
  g_s, g_tau = jax.grad(chunked, argnums=(0, 1))(f32(S), jnp.float32(tau))
  d_s, d_tau = jax.grad(dense, argnums=(0, 1))(f32(S), jnp.float32(tau))
  scale = np.abs(ref_grad).max()
  np.testing.assert_allclose(g_s, ref_grad, rtol=1e-5, atol=1e-5 * scale)
  np.testing.assert_allclose(g_s, d_s, rtol=1e-5, atol=1e-5 * scale)
  np.testing.assert_allclose(g_tau, d_tau, rtol=1e-4)


# ---------------------------------------------------------------------------
# triplet
# ---------------------------------------------------------------------------


def test_triplet_hand_computed():
  s = jnp.array([[0.5, 0.6, 0.1],
                 [0.1, 0.4, 0.3],
                 [0.2, 0.3, 0.9]])
  # hinges (margin 0.2), rows i2t: r0: [-, 0.3, 0], r1: [0, -, 0.1], r2: [0, 0, -]
  # columns t2i:                    c0: [-, 0, 0], c1: [0.4, -, 0.1], c2: [0, 0, -]
  assert float(losses.triplet_loss(s, margin=0.2)) == pytest.approx((0.4 / 3 + 0.4 / 3) / 2)
  assert float(losses.triplet_loss(s, margin=0.2, hardest=False)) == pytest.approx(
      (0.4 / 3 + 0.5 / 3) / 2)
  np.testing.assert_allclose(losses.triplet_rows(s, jnp.array([0, 1, 2]), margin=0.2),
                             [0.3, 0.1, 0.0], atol=1e-7)
  # Any positive index per row (a device's block of rows of a sharded batch):
  # [0.1, 0.4, 0.3] vs 0.3 -> 0 + 0.1; [0.2, 0.3, 0.9] vs 0.2 -> 0.1 + 0.7.
  np.testing.assert_allclose(losses.triplet_rows(s[1:], jnp.array([2, 0]), margin=0.0,
                                                 hardest=False),
                             [0.1, 0.8], atol=1e-6)


@pytest.mark.parametrize("hardest", [True, False])
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_triplet_matches_reference(hardest, margin):
  v, t, _ = make_batch(23, seed=1)
  S = v @ t.T
  ref, ref_grad = np_triplet(S, margin, hardest)
  loss, grad = jax.value_and_grad(
      lambda s: losses.triplet_loss(s, margin=margin, hardest=hardest))(f32(S))
  assert float(loss) == pytest.approx(ref, rel=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# NDCG
# ---------------------------------------------------------------------------


def test_ideal_dcg_tied_and_sorted_hand_computed():
  rel = jnp.array([[0.5, 1.0, 0.5, 0.0]])
  g = math.sqrt(2) - 1  # 2^0.5 - 1
  tied = 1 + 2 * g / math.log2(3)
  ordered = 1 + g / math.log2(3) + g / math.log2(4)
  assert float(losses.ideal_dcg(rel, idcg="tied")[0]) == pytest.approx(tied, rel=1e-6)
  assert float(losses.ideal_dcg(rel, idcg="sorted")[0]) == pytest.approx(ordered, rel=1e-6)


def test_smooth_and_hard_ndcg_hand_computed():
  s = jnp.array([[0.3, 0.1, 0.2]])
  rel = jnp.array([[0.0, 1.0, 0.5]])
  g = math.sqrt(2) - 1
  r1 = 1 + _sig(4) + _sig(2)
  r2 = 1 + _sig(2) + _sig(-2)
  idcg = 1 + g / math.log2(3)
  expected = (1 / math.log2(1 + r1) + g / math.log2(1 + r2)) / idcg
  got = losses.smooth_ndcg_rows(s, rel, tau=0.05, chunk_size=2)
  assert float(got[0]) == pytest.approx(expected, rel=1e-6)
  # Hard ranks are [1, 3, 2].
  hard = (1 / math.log2(4) + g / math.log2(3)) / idcg
  assert float(losses.hard_ndcg_rows(s, rel)[0]) == pytest.approx(hard, rel=1e-6)


def test_smooth_ndcg_loss_b2_hand_computed():
  s = jnp.array([[0.9, 0.7], [0.75, 0.8]])
  rel = jnp.array([[1.0, 0.0], [0.5, 1.0]])
  g = math.sqrt(2) - 1
  # i2t: row 0 ranks [1 + sig(-20), 1 + sig(20)], row 1 ranks [1 + sig(5), 1 + sig(-5)]
  i2t0 = 1 / math.log2(2 + _sig(-20))
  i2t1 = (g / math.log2(2 + _sig(5)) + 1 / math.log2(2 + _sig(-5))) / (1 + g / math.log2(3))
  # t2i ("paper": rows of rel): column 0 [0.9, 0.75] with rel row 0, column 1 [0.7, 0.8] with row 1
  t2i0 = 1 / math.log2(2 + _sig(-15))
  t2i1 = (g / math.log2(2 + _sig(10)) + 1 / math.log2(2 + _sig(-10))) / (1 + g / math.log2(3))
  loss, aux = losses.smooth_ndcg_loss(s, rel, tau=0.01)
  assert float(aux["ndcg_i2t"]) == pytest.approx((i2t0 + i2t1) / 2, rel=1e-6)
  assert float(aux["ndcg_t2i"]) == pytest.approx((t2i0 + t2i1) / 2, rel=1e-6)
  # loss = 1 - NDCG ~ 1e-3: compare absolutely (float32 eps at 1 is 1.2e-7).
  assert float(loss) == pytest.approx(1 - (i2t0 + i2t1 + t2i0 + t2i1) / 4, abs=1e-6)


# ---------------------------------------------------------------------------
# the full loss against the reference
# ---------------------------------------------------------------------------

# (B, tau, weight, t2i_relevance, idcg, hardest, chunk_size, relevance levels)
CASES = [
    (2, 0.01, 0.5, "paper", "tied", True, None, None),
    (3, 0.05, 0.3, "transpose", "sorted", True, 2, 4),
    (37, 0.005, 0.5, "paper", "tied", True, 8, 4),
    (37, 0.01, 0.0, "transpose", "tied", False, 16, None),
    (37, 0.05, 1.0, "paper", "sorted", True, 5, 4),
    (64, 0.01, 0.7, "transpose", "sorted", False, None, 3),
    (100, 0.005, 0.5, "transpose", "tied", True, 32, 4),
    (100, 0.05, 0.25, "paper", "sorted", True, 48, None),
]
SLOW_CASES = [  # B = 256: two combinations only, to keep the file fast.
    (256, 0.01, 0.5, "paper", "tied", True, None, 4),
    (256, 0.005, 0.8, "transpose", "sorted", True, 100, None),
]


def _check_against_reference(b, tau, weight, t2i, idcg, hardest, chunk, levels, grads):
  v, t, rel = make_batch(b, seed=b, levels=levels)
  S = v @ t.T
  static = dict(t2i_relevance=t2i, idcg=idcg, hardest=hardest, chunk_size=chunk)
  ref_loss, ref_aux, ref_grad = np_listwise(S, rel, margin=0.2, tau=tau, weight=weight,
                                            **static_without_chunk(static))
  loss, aux = jit_loss(f32(S), f32(rel), 0.2, tau, weight, **static)
  assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
  for key, ref in ref_aux.items():
    assert float(aux[key]) == pytest.approx(ref, rel=1e-5, abs=1e-7), key
  if grads:
    g_v, g_t = jit_grad_embeddings(f32(v), f32(t), f32(rel), 0.2, tau, weight, **static)
    ref_v, ref_t = ref_grad @ t, ref_grad.T @ v
    # Entries are sums of B terms of both signs (and up to 1/tau in size), so
    # near-zero entries carry float32 cancellation error ~1e-7 * the largest
    # entry; atol is set relative to the largest entry, rtol covers the rest.
    for got, ref in ((g_v, ref_v), (g_t, ref_t)):
      np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def static_without_chunk(static):
  return {k: v for k, v in static.items() if k != "chunk_size"}


@pytest.mark.parametrize("case", CASES)
def test_listwise_loss_and_gradients_match_reference(case):
  _check_against_reference(*case, grads=True)


@pytest.mark.parametrize("case", SLOW_CASES)
def test_listwise_loss_b256_matches_reference(case):
  # Values only at B = 256 (the reference Jacobian would be 256^3 float64s).
  _check_against_reference(*case, grads=case is SLOW_CASES[0])


def test_chunked_equals_dense_oracle():
  v, t, rel = make_batch(45, seed=3, levels=4)
  s, r = f32(v @ t.T), f32(rel)
  for idcg in ("tied", "sorted"):
    chunked = jax.jit(jax.value_and_grad(
        lambda s, r: losses.smooth_ndcg_rows(s, r, tau=0.01, idcg=idcg, chunk_size=7).sum()))(s, r)
    dense = jax.jit(jax.value_and_grad(
        lambda s, r: losses.dense_smooth_ndcg_rows(s, r, tau=0.01, idcg=idcg).sum()))(s, r)
    assert float(chunked[0]) == pytest.approx(float(dense[0]), rel=1e-6)
    # Both float32; summation orders differ (see _check_against_reference).
    np.testing.assert_allclose(chunked[1], dense[1], rtol=1e-5,
                               atol=1e-5 * np.abs(dense[1]).max())


def test_dense_oracle_in_float64_matches_reference_gradient():
  # Second, JAX-side check of the reference: autodiff of the dense oracle in x64.
  v, t, rel = make_batch(20, seed=4, levels=4)
  S = v @ t.T
  _, _, ref_grad = np_listwise(S, rel, tau=0.01, weight=1.0, idcg="sorted")
  with jax.enable_x64(True):
    def f(s):
      i2t = losses.dense_smooth_ndcg_rows(s, jnp.asarray(rel), tau=0.01, idcg="sorted")
      t2i = losses.dense_smooth_ndcg_rows(s.T, jnp.asarray(rel), tau=0.01, idcg="sorted")
      return ((1 - i2t.mean()) + (1 - t2i.mean())) / 2
    grad = np.asarray(jax.grad(f)(jnp.asarray(S)))
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_bfloat16_scores_are_computed_in_float32():
  v, t, rel = make_batch(16, seed=5)
  loss, aux = losses.listwise_itr_loss(jnp.asarray(v @ t.T, jnp.bfloat16), f32(rel))
  assert loss.dtype == jnp.float32 and aux["ndcg_i2t"].dtype == jnp.float32
  assert float(loss) == pytest.approx(float(losses.listwise_itr_loss(
      f32(jnp.asarray(v @ t.T, jnp.bfloat16)), f32(rel))[0]), rel=1e-6)


def test_row_blocks_compose_to_the_full_batch_loss():
  # The sharding contract: a device holding query rows `blk` (and all the
  # candidates) computes exactly its share with the *_rows functions.
  b, tau, weight, margin = 12, 0.02, 0.4, 0.3
  v, t, rel = make_batch(b, seed=12, levels=4)
  s, r = f32(v @ t.T), f32(rel)

  def blockwise(s):
    parts = {"pair": 0.0, "i2t": 0.0, "t2i": 0.0}
    for blk in (jnp.arange(0, 5), jnp.arange(5, 9), jnp.arange(9, 12)):
      parts["pair"] += (losses.triplet_rows(s[blk], blk, margin=margin).sum()
                        + losses.triplet_rows(s.T[blk], blk, margin=margin).sum()) / (2 * b)
      parts["i2t"] += losses.smooth_ndcg_rows(s[blk], r[blk], tau=tau, chunk_size=5).sum() / b
      parts["t2i"] += losses.smooth_ndcg_rows(s.T[blk], r[blk], tau=tau, chunk_size=5).sum() / b
    listwise = ((1 - parts["i2t"]) + (1 - parts["t2i"])) / 2
    return (1 - weight) * parts["pair"] + weight * listwise

  def full(s):
    return losses.listwise_itr_loss(s, r, losses.LossOptions(margin=margin, tau=tau, weight=weight))[0]

  got, got_grad = jax.jit(jax.value_and_grad(blockwise))(s)
  want, want_grad = jax.jit(jax.value_and_grad(full))(s)
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# numerical edge cases
# ---------------------------------------------------------------------------


def _finite_loss_and_grad(scores, rel, **kw):
  (loss, aux), grad = jax.jit(jax.value_and_grad(
      lambda s, r: losses.listwise_itr_loss(s, r, losses.LossOptions(**kw)), has_aux=True))(scores, rel)
  assert np.isfinite(float(loss))
  assert all(np.isfinite(float(x)) for x in aux.values())
  assert np.all(np.isfinite(np.asarray(grad)))
  return loss, aux, grad


def test_saturated_scores_tiny_tau_are_finite():
  rng = np.random.default_rng(6)
  s = f32(np.sign(rng.normal(size=(9, 9))))  # scores at +-1
  _, _, rel = make_batch(9, seed=6)
  _, aux, grad = _finite_loss_and_grad(s, f32(rel), tau=1e-3)
  # Differences are 0 or +-2000 tau: only ties contribute smooth-rank gradient.
  assert 0.0 <= float(aux["ndcg_i2t"]) <= 1.0


def test_all_scores_equal():
  b = 6
  _, _, rel = make_batch(b, seed=7)
  loss, aux, _ = _finite_loss_and_grad(jnp.zeros((b, b)), f32(rel), weight=1.0)
  # Every smooth rank is 1 + (B - 1) / 2; every hard rank is 1.
  ref, ref_aux, _ = np_listwise(np.zeros((b, b)), rel, weight=1.0)
  assert float(loss) == pytest.approx(ref, rel=1e-6)
  assert float(aux["hard_ndcg_i2t"]) == pytest.approx(ref_aux["hard_ndcg_i2t"], rel=1e-6)


def test_all_relevance_equal():
  v, t, _ = make_batch(8, seed=8)
  _, aux, _ = _finite_loss_and_grad(f32(v @ t.T), jnp.ones((8, 8)), idcg="sorted")
  # With ties everywhere the tied IDCG puts every candidate at rank 1.
  _, tied_aux, _ = _finite_loss_and_grad(f32(v @ t.T), jnp.ones((8, 8)), idcg="tied")
  assert float(tied_aux["hard_ndcg_i2t"]) < float(aux["hard_ndcg_i2t"])


def test_zero_relevance_rows_give_zero_ndcg_without_nan():
  v, t, rel = make_batch(5, seed=9)
  rel[2] = 0.0  # IDCG_2 = 0 (also for t2i, which reuses R's rows)
  s = f32(v @ t.T)
  ndcg, g_row = jax.jit(jax.value_and_grad(
      lambda s, r: losses.smooth_ndcg_rows(s, r)[2]))(s, f32(rel))
  assert float(ndcg) == 0.0 and np.all(np.asarray(g_row) == 0.0)
  assert float(jax.jit(losses.smooth_ndcg_rows)(s, f32(rel))[0]) > 0.0
  _finite_loss_and_grad(s, f32(rel), weight=1.0)
  _finite_loss_and_grad(s, jnp.zeros((5, 5)))


# ---------------------------------------------------------------------------
# transformations: jit, vmap over hyperparameters
# ---------------------------------------------------------------------------


def test_jit_matches_eager():
  v, t, rel = make_batch(12, seed=10)
  s, r = f32(v @ t.T), f32(rel)
  eager = losses.listwise_itr_loss(s, r, losses.LossOptions(idcg="sorted"))
  jitted = jax.jit(functools.partial(losses.listwise_itr_loss,
                                     options=losses.LossOptions(idcg="sorted")))(s, r)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), eager, jitted)


def test_vmap_over_tau_weight_and_margin():
  v, t, rel = make_batch(12, seed=11)
  s, r = f32(v @ t.T), f32(rel)
  grid = {"tau": [0.005, 0.01, 0.05], "weight": [0.0, 0.5, 1.0], "margin": [0.2, 0.5, 0.9]}
  for name, values in grid.items():
    def loss(x):  # chunk_size=5: several chunks, the last one padded
      return losses.listwise_itr_loss(s, r, losses.LossOptions(chunk_size=5, **{name: x}))[0]
    swept = jax.jit(jax.vmap(jax.value_and_grad(loss)))(jnp.array(values))
    for i, x in enumerate(values):
      single = jax.value_and_grad(loss)(x)  # a separate, unmapped call
      assert float(swept[0][i]) == pytest.approx(float(single[0]), rel=1e-6), name
      assert float(swept[1][i]) == pytest.approx(float(single[1]), rel=1e-5, abs=1e-7), name
    assert len(set(np.asarray(swept[0]).tolist())) == 3, name  # the sweep changes the loss


# ---------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------

S3 = jnp.eye(3)


@pytest.mark.parametrize("call,name", [
    (lambda: losses.listwise_itr_loss(jnp.ones((3, 4)), jnp.ones((3, 4))), "scores"),
    (lambda: losses.listwise_itr_loss(jnp.ones((1, 1)), jnp.ones((1, 1))), "scores"),
    (lambda: losses.listwise_itr_loss(S3, jnp.ones((3, 2))), "relevance"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(tau=0.0)), "tau"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(tau=-0.01)), "tau"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(tau=jnp.array([0.01, 0.02]))), "tau"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(margin=-0.1)), "margin"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(weight=-0.1)), "weight"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(weight=1.5)), "weight"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(t2i_relevance="rows")), "t2i_relevance"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(idcg="ideal")), "idcg"),
    (lambda: losses.listwise_itr_loss(S3, S3, losses.LossOptions(chunk_size=0)), "chunk_size"),
    (lambda: losses.smooth_ndcg_loss(S3, jnp.ones((2, 3))), "relevance"),
    (lambda: losses.smooth_ndcg_loss(S3, S3, idcg="dcg"), "idcg"),
    (lambda: losses.smooth_ndcg_rows(jnp.ones((2, 3)), jnp.ones((3, 2))), "query_relevance"),
    (lambda: losses.smooth_ndcg_rows(jnp.ones(3), jnp.ones(3)), "query_scores"),
    (lambda: losses.triplet_loss(jnp.ones((2, 3))), "scores"),
    (lambda: losses.triplet_loss(S3, margin=-1.0), "margin"),
    (lambda: losses.triplet_rows(S3, jnp.array([0, 1])), "positive_index"),
    (lambda: losses.triplet_rows(S3, jnp.array([0.0, 1.0, 2.0])), "positive_index"),
    (lambda: losses.smooth_ranks(S3, tau=0.0), "tau"),
])
def test_bad_arguments_raise_value_error_naming_them(call, name):
  with pytest.raises(ValueError, match=name):
    call()


def test_traced_hyperparameters_are_not_validated_but_concrete_ones_are_under_jit():
  # Concrete (closed-over) values are checked even inside jit...
  with pytest.raises(ValueError, match="tau"):
    jax.jit(lambda s: losses.listwise_itr_loss(s, S3, losses.LossOptions(tau=-1.0))[0])(S3)
  # ...traced ones cannot be, and must not break tracing.
  out = jax.jit(lambda s, tau: losses.listwise_itr_loss(s, S3, losses.LossOptions(tau=tau))[0])(S3, 0.01)
  assert np.isfinite(float(out))


# ---------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------


def _temp_bytes(fn, b):
  spec = jax.ShapeDtypeStruct((b, b), jnp.float32)
  return jax.jit(fn).lower(spec, spec).compile().memory_analysis().temp_size_in_bytes


def test_forward_backward_memory_is_quadratic_not_cubic():
  # Deterministic property of the compiled program (no timing): at B = 1024 a
  # B^3 float32 tensor is 4 GiB; the chunked loss must stay O(B^2 * chunk).
  b = 1024

  def chunked(s, r):
    return jax.value_and_grad(lambda s: losses.listwise_itr_loss(s, r)[0])(s)

  def dense(s, r):
    def f(s):
      i2t = losses.dense_smooth_ndcg_rows(s, r)
      t2i = losses.dense_smooth_ndcg_rows(s.T, r)
      return ((1 - i2t.mean()) + (1 - t2i.mean())) / 2
    return jax.value_and_grad(f)(s)

  cubic = b ** 3 * 4
  chunked_bytes = _temp_bytes(chunked, b)
  assert chunked_bytes < 32 * b * b * 4, chunked_bytes  # a few [B, B] buffers
  assert chunked_bytes < cubic / 32
  # The test can fail: the dense oracle does hold B^3 tensors.
  assert _temp_bytes(dense, b) >= cubic


@pytest.mark.parametrize("rank_method", ["chunked", "sorted"])
def test_given_ideal_dcg_equals_the_computed_one_and_is_shape_checked(rank_method):
  # smooth_ndcg_loss computes each IDCG once and hands it to the row functions.
  rng = np.random.default_rng(3)
  s, rel = f32(rng.normal(size=(5, 9)) * 0.2), f32(rng.uniform(size=(5, 9)))
  ideal = losses.ideal_dcg(rel)
  for fn in (functools.partial(losses.smooth_ndcg_rows, rank_method=rank_method),
             losses.hard_ndcg_rows):
    np.testing.assert_array_equal(fn(s, rel, ideal=ideal), fn(s, rel))
    with pytest.raises(ValueError, match="ideal"):
      fn(s, rel, ideal=ideal[:4])
  i2t, t2i = losses.ideal_dcgs(rel, rel.T[:, :5])
  np.testing.assert_allclose(t2i, np_idcg(np.asarray(rel.T[:, :5], np.float64), "tied"),
                             rtol=1e-6)
