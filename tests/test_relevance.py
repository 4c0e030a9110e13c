"""Tests for itr_jax.relevance.rsc against hand-computed values and a float64 NumPy reference."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax.relevance import rsc


def np_rsc(image_caption_emb, caption_emb):
  """R_ij = (1 + max_c cos(E_img[i, c], E_cap[j])) / 2, R_ii = 1, by explicit loops."""
  b, c, _ = image_caption_emb.shape
  out = np.ones((b, b))
  for i in range(b):
    for j in range(b):
      if i != j:
        cos = [image_caption_emb[i, k] @ caption_emb[j]
               / (np.linalg.norm(image_caption_emb[i, k]) * np.linalg.norm(caption_emb[j]))
               for k in range(c)]
        out[i, j] = (1 + max(cos)) / 2
  return out


def test_hand_computed_b3():
  img_caps = jnp.array([
      [[1.0, 0.0], [0.0, 1.0]],      # image 0: captions along x and y
      [[-1.0, 0.0], [-1.0, 0.0]],    # image 1: both along -x
      [[1.0, 1.0], [0.0, -5.0]],     # image 2: diagonal and -y
  ])
  caps = jnp.array([[2.0, 0.0], [0.0, -3.0], [-1.0, -1.0]])  # x, -y, -diagonal
  h = math.sqrt(0.5)
  expected = [
      # image 0 vs -y: max(cos(x,-y)=0, cos(y,-y)=-1) = 0; vs -diag: max(-h, -h)
      [1.0, (1 + 0) / 2, (1 - h) / 2],
      # image 1 vs x: cos(-x, x) = -1; vs -diag: cos(-x, -diag) = h
      [(1 - 1) / 2, 1.0, (1 + h) / 2],
      # image 2 vs x: max(h, 0); vs -y: max(-h, 1)
      [(1 + h) / 2, (1 + 1) / 2, 1.0],
  ]
  np.testing.assert_allclose(rsc(img_caps, caps), expected, atol=1e-6)


def test_matches_reference_on_unnormalised_inputs():
  rng = np.random.default_rng(0)
  img_caps = rng.normal(size=(17, 5, 12)) * rng.uniform(0.1, 10, size=(17, 5, 1))
  caps = rng.normal(size=(17, 12)) * 3.0
  got = rsc(jnp.asarray(img_caps, jnp.float32), jnp.asarray(caps, jnp.float32))
  assert got.dtype == jnp.float32 and got.shape == (17, 17)
  np.testing.assert_allclose(got, np_rsc(img_caps, caps), rtol=1e-6, atol=1e-6)
  assert np.all((np.asarray(got) >= 0) & (np.asarray(got) <= 1))


def test_no_gradient_flows_and_jit_works():
  rng = np.random.default_rng(1)
  img_caps = jnp.asarray(rng.normal(size=(4, 3, 6)), jnp.float32)
  caps = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  grads = jax.grad(lambda a, b: jnp.sum(rsc(a, b) ** 2), argnums=(0, 1))(img_caps, caps)
  assert all(np.all(np.asarray(g) == 0) for g in grads)
  np.testing.assert_allclose(jax.jit(rsc)(img_caps, caps), rsc(img_caps, caps), rtol=1e-6)


def test_zero_embeddings_give_half_relevance_not_nan():
  img_caps = jnp.zeros((3, 2, 4)).at[0, 0, 0].set(1.0)
  caps = jnp.zeros((3, 4)).at[1, 0].set(1.0)
  got = np.asarray(rsc(img_caps, caps))
  assert np.all(np.isfinite(got))
  assert got[0, 1] == pytest.approx(1.0)   # image 0's caption 0 equals caption 1
  assert got[0, 2] == pytest.approx(0.5)   # zero caption: cos = 0
  np.testing.assert_array_equal(np.diag(got), 1.0)


def test_bfloat16_inputs_give_float32():
  img_caps = jnp.ones((2, 3, 4), jnp.bfloat16)
  caps = jnp.ones((2, 4), jnp.bfloat16)
  assert rsc(img_caps, caps).dtype == jnp.float32


@pytest.mark.parametrize("img_shape,cap_shape,name", [
    ((4, 8), (4, 8), "image_caption_emb"),      # missing the captions axis
    ((4, 5, 8), (4, 5, 8), "caption_emb"),      # caption_emb must be 2-D
    ((4, 5, 8), (3, 8), "caption_emb"),         # batch mismatch
    ((4, 5, 8), (4, 7), "caption_emb"),         # dimension mismatch
])
def test_shape_errors_name_the_argument(img_shape, cap_shape, name):
  with pytest.raises(ValueError, match=name):
    rsc(jnp.ones(img_shape), jnp.ones(cap_shape))


def test_rsc_of_a_caption_of_the_image_is_exactly_one_whatever_the_batch():
  """Snapping to a 2^-20 grid makes ties exact, so "tied" IDCG is stable."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from itr_jax.relevance import rsc_matrix  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  caps = rng.standard_normal((7, 5, 384)).astype(np.float32)
  caption_emb = caps[np.arange(7), rng.integers(0, 5, 7)]
  full = np.asarray(rsc_matrix(caps, caption_emb))
  assert np.all(np.diag(full) == 1.0)
  for rows in (slice(0, 1), slice(2, 5), slice(6, 7)):  # other matmul shapes
    np.testing.assert_array_equal(np.asarray(rsc_matrix(caps[rows], caption_emb)), full[rows])


def official_rsc_float32(image_caption_emb, caption_emb):
  """The official computation in float32: x / sqrt(sum x^2), batched matmul,
  max over the image's captions, (1 + r) / 2, positives set to 1; no snapping."""
  img = np.asarray(image_caption_emb, np.float32)
  cap = np.asarray(caption_emb, np.float32)
  img = img / np.sqrt(np.sum(img * img, axis=-1, keepdims=True))
  cap = cap / np.sqrt(np.sum(cap * cap, axis=-1, keepdims=True))
  out = (np.float32(1) + np.einsum("icd,jd->ijc", img, cap).max(-1)) / np.float32(2)
  np.fill_diagonal(out, 1.0)
  return out


def test_unsnapped_is_the_official_float32_relevance_and_snapped_is_on_the_grid():
  rng = np.random.default_rng(4)
  caps = rng.standard_normal((9, 5, 384)).astype(np.float32)
  # Captions 1..8 are each one of image 0's captions: relevance ~1 to image 0.
  caption_emb = np.concatenate([caps[:1, 0], caps[0, rng.integers(0, 5, 8)]])
  raw = np.asarray(rsc(caps, caption_emb, snap=False))
  snapped = np.asarray(rsc(caps, caption_emb))
  want = official_rsc_float32(caps, caption_emb)
  np.testing.assert_allclose(raw, want, atol=3e-7, rtol=0)  # ~2 float32 ulps at 1
  np.testing.assert_allclose(raw, np_rsc(caps, caption_emb), atol=3e-7, rtol=0)
  grid = snapped * 2.0**20
  np.testing.assert_array_equal(grid, np.round(grid))
  assert not np.array_equal(raw * 2.0**20, np.round(raw * 2.0**20))  # raw is off-grid
  assert np.abs(raw - snapped).max() <= 2.0**-21
  assert np.all(snapped[0, 1:] == 1.0)  # ties with the positive stay exact


@pytest.mark.parametrize("snap", ["yes", 1, None])
def test_snap_must_be_a_bool(snap):
  with pytest.raises(ValueError, match="snap"):
    rsc(jnp.ones((2, 1, 3)), jnp.ones((2, 3)), snap=snap)
