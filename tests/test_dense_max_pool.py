"""Tests for itr_jax.models.dense_max_pool (fused Dense + max pool, sparse VJP)."""
import doctest
import functools
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax import losses, models
from itr_jax.models.dense_max_pool import DenseMaxPool, dense_max_pool

RNG = np.random.default_rng(0)


def np_dense_max_pool(x, w, b, mask, g):
  """float64 NumPy forward and hand VJP: (out, dx, dw, db), first arg-max."""
  x, w, b, g = (np.float64(a) for a in (x, w, b, g))
  y = np.where(mask[..., None], x @ w + b, -np.inf)  # [B, R, E]
  win = np.argmax(y, axis=1)  # [B, E]
  out = np.take_along_axis(y, win[:, None], 1)[:, 0]
  dx, dw = np.zeros_like(x), np.zeros_like(w)
  for bi in range(x.shape[0]):
    for e in range(w.shape[1]):
      dx[bi, win[bi, e]] += g[bi, e] * w[:, e]
      dw[:, e] += g[bi, e] * x[bi, win[bi, e]]
  return out, dx, dw, g.sum(0)


def random_case(batch, regions, dim, embed, masked=True, dtype=np.float32):
  x = RNG.normal(size=(batch, regions, dim)).astype(dtype)
  w = RNG.normal(size=(dim, embed)).astype(dtype)
  b = RNG.normal(size=embed).astype(dtype)
  g = RNG.normal(size=(batch, embed)).astype(dtype)
  mask = RNG.random((batch, regions)) < (0.6 if masked else 2.0)
  mask[np.arange(batch), RNG.integers(0, regions, batch)] = True  # >= 1 valid
  return x, w, b, mask, g


def vjp(fn, x, w, b, mask, g):
  out, pullback = jax.vjp(lambda x, w, b: fn(x, w, b, mask), x, w, b)
  return (out, *pullback(g))


def plain(x, w, b, mask):
  return models.max_pool(x @ w + b, mask)


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (1, 1, 3, 2), (4, 7, 5, 1),
                                   (2, 36, 8, 13), (5, 3, 1, 9)])
@pytest.mark.parametrize("masked", [True, False])
def test_values_and_gradients_match_numpy(shape, masked):
  x, w, b, mask, g = random_case(*shape, masked=masked)
  want = np_dense_max_pool(x, w, b, mask, g)
  got = jax.jit(vjp, static_argnums=0)(
      dense_max_pool, *map(jnp.asarray, (x, w, b, mask, g)))
  for name, a, e in zip(["out", "d_features", "d_kernel", "d_bias"], got, want):
    np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (6, 36, 16, 11)])
def test_float64_equals_jax_autodiff_of_dense_then_max(shape):
  with jax.enable_x64(True):
    x, w, b, mask, g = map(jnp.asarray, random_case(*shape, dtype=np.float64))
    got = vjp(dense_max_pool, x, w, b, mask, g)
    want = vjp(plain, x, w, b, mask, g)
    for name, a, e in zip(["out", "d_features", "d_kernel", "d_bias"], got,
                          want):
      assert a.dtype == jnp.float64, name
      np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12, err_msg=name)


def test_masked_regions_never_win_nor_get_gradient():
  x, w, b, _, g = random_case(2, 4, 3, 5)
  x[:, 1:] += 100.0  # masked regions would win every output
  mask = np.array([[True, False, False, False], [False, False, True, False]])
  out, dx, dw, _ = vjp(dense_max_pool, *map(jnp.asarray, (x, w, b, mask, g)))
  np.testing.assert_allclose(out[0], x[0, 0] @ w + b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out[1], x[1, 2] @ w + b, rtol=1e-5, atol=1e-5)
  assert not np.any(dx[0, 1:]) and not np.any(dx[1, [0, 1, 3]])
  np.testing.assert_allclose(dw, np.outer(x[0, 0], g[0]) + np.outer(x[1, 2], g[1]),
                             rtol=1e-5, atol=1e-5)


def test_ties_between_identical_regions_match_autodiff():
  # Duplicated (or all-zero, unmasked) regions tie on every output; autodiff
  # splits the gradient among them, we send it to the first: same kernel grad.
  x, w, b, _, g = random_case(3, 4, 5, 6)
  x[:, 2] = x[:, 0]
  x[1, 1] = x[1, 3] = 0.0
  args = [jnp.asarray(a) for a in (x, w, b, np.ones((3, 4), bool), g)]
  (out, _, dw, db), (want_out, _, want_dw, want_db) = (
      vjp(dense_max_pool, *args), vjp(plain, *args))
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(db, want_db, rtol=1e-5, atol=1e-5)


def test_tie_between_different_regions_goes_to_the_first():
  x = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])  # both project to 1 on output 0
  w = jnp.array([[1.0], [1.0]])
  out, dx, dw, db = vjp(dense_max_pool, x, w, jnp.zeros(1), None,
                        jnp.array([[2.0]]))
  np.testing.assert_array_equal(out, [[1.0]])
  np.testing.assert_array_equal(dx, [[[2.0, 2.0], [0.0, 0.0]]])
  np.testing.assert_array_equal(dw, [[2.0], [0.0]])  # autodiff: [[1], [1]]
  np.testing.assert_array_equal(db, [2.0])


def test_nan_in_a_valid_region_propagates_like_jnp_max():
  x, w, b, _, _ = random_case(2, 3, 4, 5)
  x[0, 1, 0] = np.nan
  x[1, 2, 0] = np.nan
  mask = np.array([[True, True, True], [True, True, False]])
  out = dense_max_pool(*map(jnp.asarray, (x, w, b, mask)))
  assert np.all(np.isnan(out[0]))
  np.testing.assert_allclose(out[1], np.max((x[1] @ w + b)[:2], 0), rtol=1e-5)


def test_only_the_requested_gradients_are_computed():
  x, w, b, mask, _ = map(jnp.asarray, random_case(2, 3, 4, 5))
  jaxpr = str(jax.make_jaxpr(jax.grad(
      lambda w: dense_max_pool(x, w, b, mask).sum()))(w))
  assert "dot_general" not in jaxpr.split("scan")[-1]  # no dense X^T dY / dX
  dx = jax.grad(lambda x: dense_max_pool(x, w, b, mask).sum())(x)
  np.testing.assert_allclose(dx, vjp(plain, x, w, b, mask, jnp.ones((2, 5)))[1],
                             rtol=1e-5, atol=1e-5)


def test_vmap_over_kernels_equals_a_loop():
  x, _, b, mask, g = map(jnp.asarray, random_case(3, 4, 5, 6))
  ws = jnp.asarray(RNG.normal(size=(2, 5, 6)), jnp.float32)
  grad = lambda w: jax.grad(lambda w: jnp.sum(dense_max_pool(x, w, b, mask) * g))(w)
  batched = jax.jit(jax.vmap(grad))(ws)
  for k in range(2):
    np.testing.assert_allclose(batched[k], vjp(plain, x, ws[k], b, mask, g)[2],
                               rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise():
  x = jnp.ones((2, 3, 4))
  with pytest.raises(ValueError, match="kernel"):
    dense_max_pool(x, jnp.ones((5, 2)))
  with pytest.raises(ValueError, match="bias"):
    dense_max_pool(x, jnp.ones((4, 2)), jnp.ones(3))
  with pytest.raises(ValueError, match="mask"):
    dense_max_pool(x, jnp.ones((4, 2)), mask=jnp.ones((2, 4), bool))
  with pytest.raises(ValueError, match="features"):
    dense_max_pool(jnp.ones((3, 4)), jnp.ones((4, 2)))


def test_layer_has_nn_dense_params_and_init():
  kw = dict(kernel_init=nn.initializers.xavier_uniform(), name="fc")
  x = jnp.ones((2, 3, 5))

  class Wrap(nn.Module):
    layer: type

    @nn.compact
    def __call__(self, x):
      return self.layer(4, **kw)(x)

  fused = Wrap(DenseMaxPool).init(jax.random.key(7), x)
  dense = Wrap(nn.Dense).init(jax.random.key(7), x)
  assert jax.tree.structure(fused) == jax.tree.structure(dense)
  jax.tree.map(np.testing.assert_array_equal, fused, dense)


@pytest.mark.parametrize("pooling", ["max", "gpo"])
def test_image_encoder_fused_and_plain_agree(pooling):
  x, _, _, mask, g = random_case(4, 6, 8, 5)
  x, mask, g = map(jnp.asarray, (x, mask, g))
  enc = {f: models.ImageEncoder(embed_size=5, pooling=pooling, fused_max_pool=f)
         for f in (True, False)}
  params = {f: e.init(jax.random.key(1), x, mask) for f, e in enc.items()}
  jax.tree.map(np.testing.assert_array_equal, params[True], params[False])
  results = {f: jax.jit(jax.value_and_grad(
      lambda p, e=e: jnp.sum(e.apply(p, x, mask) * g)))(params[True])
             for f, e in enc.items()}
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5,
                                                       atol=1e-6),
               results[True], results[False])


def test_image_encoder_fused_in_bfloat16():
  x, _, _, mask, _ = map(jnp.asarray, random_case(3, 5, 8, 4))
  enc = models.ImageEncoder(embed_size=4, dtype=jnp.bfloat16,
                            fused_max_pool=True)
  params = enc.init(jax.random.key(0), x, mask)
  grads = jax.grad(lambda p: enc.apply(p, x, mask).sum())(params)
  assert grads["params"]["fc"]["kernel"].dtype == jnp.float32
  ref = models.ImageEncoder(embed_size=4, fused_max_pool=False)
  np.testing.assert_allclose(enc.apply(params, x, mask),
                             ref.apply(params, x, mask), atol=3e-2)


def test_whole_model_gradient_equals_plain_autodiff_pooling():
  model = models.VSEModel(vocab_size=20, word_dim=6, embed_size=8)
  images = jnp.asarray(RNG.normal(size=(5, 7, 10)), jnp.float32)
  mask = jnp.asarray(RNG.random((5, 7)) < 0.7).at[:, 0].set(True)
  tokens = jnp.asarray(RNG.integers(1, 20, (5, 4)), jnp.int32)
  lengths = jnp.array([4, 2, 3, 1, 4], jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), images, tokens, lengths, mask)

  def loss(params, fused):
    img = models.ImageEncoder(embed_size=8, fused_max_pool=fused).apply(
        {"params": params["params"]["image_encoder"]}, images, mask)
    cap = model.apply(params, tokens, lengths, method=models.VSEModel.encode_texts)
    return losses.triplet_loss(img @ cap.T)

  got = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, True)
  want = jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, False)
  assert float(got[0]) > 0.0
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-5,
                                                       atol=1e-6), got, want)
  # The model's own image tower (either path) is one of the two.
  img = jax.jit(functools.partial(model.apply, method=models.VSEModel.encode_images))(
      params, images, mask)
  ref = jax.jit(models.ImageEncoder(embed_size=8, fused_max_pool=False).apply)(
      {"params": params["params"]["image_encoder"]}, images, mask)
  np.testing.assert_allclose(img, ref, rtol=1e-5, atol=1e-6)


def test_docstring_examples():
  # The package exports the function under the module's name.
  module = importlib.import_module("itr_jax.models.dense_max_pool")
  result = doctest.testmod(module, extraglobs={"jax": jax, "jnp": jnp})
  assert result.attempted >= 6 and result.failed == 0


def test_image_encoder_fuses_by_default_only_on_one_cpu_device():
  x = jnp.ones((2, 3, 4))
  enc = models.ImageEncoder(embed_size=5)
  params = enc.init(jax.random.key(0), x)
  fused = lambda enc: "custom_vjp_call" in str(
      jax.make_jaxpr(lambda p: enc.apply(p, x))(params))
  assert fused(enc) == (jax.default_backend() == "cpu"
                        and jax.device_count() == 1)
  assert fused(enc.clone(fused_max_pool=True))
  assert not fused(enc.clone(fused_max_pool=False))
