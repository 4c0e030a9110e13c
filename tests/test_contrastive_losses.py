"""InfoNCE and sigmoid pairwise losses: hand values, a float64 NumPy oracle,
chunked = full, sharded (8 simulated devices) = one device, mixed with S-NDCG."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax import losses
from itr_jax import relevance as relevance_lib
from itr_jax import sharding
from itr_jax.models import scorer
from itr_jax.sharding import mesh as mesh_lib


def oracle(scores, kind, logit_scale, logit_bias):
  """float64 NumPy: CLIP / SigLIP as written in their papers' pseudo-code."""
  s = np.asarray(scores, np.float64)
  t = np.exp(min(logit_scale, np.log(100.0)))
  n = s.shape[0]
  if kind == "infonce":
    z = t * s
    def ce(m):
      m = m - m.max(1, keepdims=True)
      return -(np.diag(m) - np.log(np.exp(m).sum(1)))
    return (ce(z).mean() + ce(z.T).mean()) / 2
  z = t * s + logit_bias
  y = 2 * np.eye(n) - 1
  return np.mean(np.sum(np.log1p(np.exp(-y * z)), axis=1))


def random_batch(n, dim=6, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.normal(size=(n, dim)); cap = img + 0.7 * rng.normal(size=(n, dim))
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  cap /= np.linalg.norm(cap, axis=1, keepdims=True)
  return img.astype(np.float32), cap.astype(np.float32)


def test_hand_computed():
  s = jnp.array([[0.5, 0.1], [0.2, 0.4]])
  # InfoNCE, t = 1: rows [log(e^.5+e^.1)-.5, log(e^.2+e^.4)-.4], columns likewise.
  rows = [np.log(np.exp(.5) + np.exp(.1)) - .5, np.log(np.exp(.2) + np.exp(.4)) - .4]
  cols = [np.log(np.exp(.5) + np.exp(.2)) - .5, np.log(np.exp(.1) + np.exp(.4)) - .4]
  want = (np.mean(rows) + np.mean(cols)) / 2
  assert float(losses.pairwise_loss(s, "infonce")) == pytest.approx(want, rel=1e-6)
  # Sigmoid, t = e^0 = 1, b = -1: diagonal logits -0.5, -0.6; off -0.9, -0.8.
  sp = lambda x: np.log1p(np.exp(x))  # -log sigmoid(-x)
  want = (sp(0.5) + sp(-0.9) + sp(-0.8) + sp(0.6)) / 2
  got = losses.pairwise_loss(s, "sigmoid", logit_scale=0.0, logit_bias=-1.0)
  assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
@pytest.mark.parametrize("logit_scale,logit_bias", [(np.log(10.0), -10.0), (6.0, 0.3)])
def test_matches_float64_oracle(kind, logit_scale, logit_bias):
  img, cap = random_batch(9)
  got = losses.pairwise_loss(jnp.asarray(img @ cap.T), kind, logit_scale=logit_scale,
                             logit_bias=logit_bias)
  assert float(got) == pytest.approx(oracle(img @ cap.T, kind, logit_scale, logit_bias),
                                     rel=2e-6)


def test_temperature_clamped_at_100():
  s = jnp.array([[0.3, 0.1], [0.0, 0.2]])
  assert np.isclose(losses.pairwise_loss(s, "infonce", logit_scale=9.0),
                    losses.pairwise_loss(s, "infonce", logit_scale=np.log(100.0)))
  g = jax.grad(lambda ls: losses.pairwise_loss(s, "infonce", logit_scale=ls))(9.0)
  assert g == 0.0


@functools.lru_cache(None)
def _value_and_grads(kind, chunk):
  def full(img, cap, ls, b):
    return losses.pairwise_loss(img @ cap.T, kind, logit_scale=ls, logit_bias=b)

  def chunked(img, cap, ls, b):
    return losses.chunked_pairwise_loss(img, cap, kind, chunk_size=chunk,
                                        logit_scale=ls, logit_bias=b)

  grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))
  return grad(full), grad(chunked)


@pytest.mark.parametrize("kind", ["triplet", "infonce", "sigmoid"])
def test_chunked_equals_full(kind):
  img, cap = random_batch(12)
  full, chunked = _value_and_grads(kind, 5)  # blocks of 4 (largest divisor <= 5)
  (v1, g1), (v2, g2) = full(img, cap, 2.0, -1.0), chunked(img, cap, 2.0, -1.0)
  np.testing.assert_allclose(v2, v1, rtol=1e-5)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_unknown_kind_is_one_clear_error():
  with pytest.raises(ValueError, match="pairwise"):
    losses.pairwise_loss(jnp.eye(2), "hinge")


@pytest.fixture(scope="module")
def mesh():
  return mesh_lib.create_mesh([("data", -1)])


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_sharded_equals_single_device_with_sndcg(mesh, kind):
  assert mesh.size == 8
  img, cap = random_batch(16, seed=1)
  rng = np.random.default_rng(2)
  sent = rng.normal(size=(16, 5)).astype(np.float32)
  image_caption = np.stack([sent, sent + 0.1 * rng.normal(size=sent.shape)], 1).astype(np.float32)
  options = losses.LossOptions(weight=0.5, pairwise=kind)

  def single(img, cap, ls, b):
    rel = relevance_lib.rsc(image_caption, sent)
    return losses.listwise_itr_loss(img @ cap.T, rel,
                                    options.replace(logit_scale=ls, logit_bias=b))

  def sharded(img, cap, ls, b):
    loss, aux, _ = sharding.global_batch_loss(
        scorer.dot_product_scores, None, img, cap, image_caption, sent, mesh=mesh,
        options=options.replace(logit_scale=ls, logit_bias=b))
    return loss, aux

  args = (img, cap, jnp.float32(2.5), jnp.float32(-2.0))
  (l1, a1), g1 = jax.jit(jax.value_and_grad(single, (0, 1, 2, 3), has_aux=True))(*args)
  (l2, a2), g2 = jax.jit(jax.value_and_grad(sharded, (0, 1, 2, 3), has_aux=True))(*args)
  np.testing.assert_allclose(l2, l1, rtol=1e-5)
  np.testing.assert_allclose(a2["pairwise"], a1["pairwise"], rtol=1e-5)
  np.testing.assert_allclose(a1["pairwise"], oracle(img @ cap.T, kind, 2.5, -2.0), rtol=1e-5)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
