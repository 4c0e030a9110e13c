"""Tests for itr_jax.models against float64 NumPy references."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from itr_jax import models
from itr_jax.models import gru as gru_lib

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- references
def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_gru(xs, p):
  """PyTorch-style GRU over one unpadded sequence xs [T, F]; states [T, H]."""
  w_i, b_i = np.float64(p["input_kernel"]), np.float64(p["input_bias"])
  w_h, b_h = np.float64(p["recurrent_kernel"]), np.float64(p["recurrent_bias"])
  hidden = w_h.shape[0]
  h = np.zeros(hidden)
  states = []
  for x in np.float64(xs):
    gi, gh = x @ w_i + b_i, h @ w_h + b_h
    r = sigmoid(gi[:hidden] + gh[:hidden])
    z = sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
    n = np.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
    h = (1 - z) * n + z * h
    states.append(h)
  return np.stack(states)


def np_l2norm(x):
  return x / (np.sqrt(np.sum(x ** 2, axis=-1, keepdims=True)) + 1e-8)


def np_text_encoder(params, tokens, lengths, bidirectional):
  table = np.float64(params["embed"]["embedding"])
  out = []
  for row, length in zip(np.asarray(tokens), np.asarray(lengths)):
    words = table[row[:length]]  # only the unpadded caption
    final = np_gru(words, params["gru"]["forward"])[-1]
    if bidirectional:
      backward = np_gru(words[::-1], params["gru"]["backward"])[-1]
      final = (final + backward) / 2
    out.append(final)
  return np_l2norm(np.stack(out))


def np_gpo_pool(features, weights, mask):
  """sum_k weights[k] * (k-th largest valid value) per dimension."""
  out = []
  for f, w, m in zip(np.float64(features), np.float64(weights), mask):
    valid = -np.sort(-f[m], axis=0)  # [n, D], descending
    out.append(np.sum(valid * w[:len(valid), None], axis=0))
  return np.stack(out)


def tiny_text_batch(batch=4, length=6, vocab=20):
  tokens = RNG.integers(1, vocab, size=(batch, length)).astype(np.int32)
  lengths = np.array([6, 1, 3, 5][:batch], np.int32)
  for b, n in enumerate(lengths):
    tokens[b, n:] = 0  # padding id
  return jnp.asarray(tokens), jnp.asarray(lengths)


# ---------------------------------------------------------------- GRU
def test_gru_cell_matches_numpy():
  hidden, batch = 3, 2
  p = {"input_kernel": np.eye(4, 3 * hidden),
       "input_bias": RNG.normal(size=3 * hidden),
       "recurrent_kernel": RNG.normal(size=(hidden, 3 * hidden)),
       "recurrent_bias": RNG.normal(size=3 * hidden)}
  x = RNG.normal(size=(batch, 4))
  h = RNG.normal(size=(batch, hidden))
  x_proj = x @ p["input_kernel"] + p["input_bias"]
  new_h, _ = gru_lib.gru_cell(
      jnp.float32(h), jnp.float32(x_proj), jnp.float32(p["recurrent_kernel"]),
      jnp.float32(p["recurrent_bias"]))
  # Reference with a non-zero initial state: run one step per row by hand.
  gh = h @ p["recurrent_kernel"] + p["recurrent_bias"]
  r = sigmoid(x_proj[:, :3] + gh[:, :3])
  z = sigmoid(x_proj[:, 3:6] + gh[:, 3:6])
  n = np.tanh(x_proj[:, 6:] + r * gh[:, 6:])
  np.testing.assert_allclose(new_h, (1 - z) * n + z * h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_steps", [6, 4, 1])
def test_gru_scan_values_and_grads_match_autodiff(num_steps):
  length, batch, hidden = 6, 3, 4
  k = jax.random.split(jax.random.key(1), 4)
  x_proj = jax.random.normal(k[0], (length, batch, 3 * hidden))
  kernel = 0.5 * jax.random.normal(k[1], (hidden, 3 * hidden))
  bias = 0.5 * jax.random.normal(k[2], (3 * hidden,))
  probe = jax.random.normal(k[3], (length, batch, hidden))

  def reference(x_proj, kernel, bias):  # autodiff, state held after num_steps
    def step(h, inputs):
      t, x_t = inputs
      h = jnp.where(t < num_steps, gru_lib.gru_cell(h, x_t, kernel, bias)[0], h)
      return h, h
    return jax.lax.scan(step, jnp.zeros((batch, hidden)),
                        (jnp.arange(length), x_proj))[1]

  args = (x_proj, kernel, bias)
  fast = lambda *a: gru_lib.gru_scan(*a, num_steps)
  np.testing.assert_allclose(jax.jit(fast)(*args), jax.jit(reference)(*args),
                             rtol=1e-6, atol=1e-6)
  loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)) * probe)
  got = jax.jit(jax.grad(loss(fast), argnums=(0, 1, 2)))(*args)
  want = jax.jit(jax.grad(loss(reference), argnums=(0, 1, 2)))(*args)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_reverse_valid_prefix():
  x = jnp.arange(12).reshape(4, 3)  # [L=4, B=3]
  lengths = jnp.array([4, 2, 1])
  got = gru_lib.reverse_valid_prefix(x, lengths)
  want = np.array([[9, 4, 2], [6, 1, 5], [3, 7, 8], [0, 10, 11]])
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(
      gru_lib.reverse_valid_prefix(got, lengths), x)  # an involution


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_outputs_match_numpy_per_sequence(bidirectional):
  batch, length, features, hidden = 3, 5, 2, 4
  x = jax.random.normal(jax.random.key(2), (batch, length, features))
  lengths = jnp.array([5, 2, 3])
  gru = models.GRU(hidden, bidirectional=bidirectional)
  params = jax.jit(gru.init)(jax.random.key(3), x, lengths)["params"]
  outputs, final = jax.jit(gru.apply)({"params": params}, x, lengths)
  for b, n in enumerate(np.asarray(lengths)):
    want = np_gru(x[b, :n], params["forward"])
    want_final = want[-1]
    if bidirectional:
      back = np_gru(x[b, :n][::-1], params["backward"])[::-1]
      want, want_final = (want + back) / 2, (want[-1] + back[0]) / 2
    np.testing.assert_allclose(outputs[b, :n], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final[b], want_final, rtol=1e-5, atol=1e-6)


def test_gru_rejects_bad_shapes():
  gru = models.GRU(4)
  with pytest.raises(ValueError, match="inputs"):
    gru.init(jax.random.key(0), jnp.ones((2, 3)), jnp.array([1, 2]))
  with pytest.raises(ValueError, match="lengths"):
    gru.init(jax.random.key(0), jnp.ones((2, 3, 1)), jnp.array([1, 2, 3]))


# ---------------------------------------------------------------- text
@pytest.mark.parametrize("bidirectional", [False, True])
def test_text_encoder_matches_numpy_reference(bidirectional):
  tokens, lengths = tiny_text_batch()
  enc = models.TextEncoder(vocab_size=20, word_dim=3, embed_size=5,
                           bidirectional=bidirectional)
  params = jax.jit(enc.init)(jax.random.key(4), tokens, lengths)["params"]
  got = jax.jit(enc.apply)({"params": params}, tokens, lengths)
  want = np_text_encoder(params, tokens, lengths, bidirectional)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_text_encoder_ignores_tokens_after_length(bidirectional):
  tokens, lengths = tiny_text_batch()
  enc = models.TextEncoder(vocab_size=20, word_dim=3, embed_size=5,
                           bidirectional=bidirectional)
  variables = jax.jit(enc.init)(jax.random.key(5), tokens, lengths)
  apply = jax.jit(enc.apply)
  garbage = jnp.where(jnp.arange(tokens.shape[1])[None] >= lengths[:, None],
                      jnp.asarray(RNG.integers(1, 20, tokens.shape)), tokens)
  assert not np.array_equal(garbage, tokens)
  base = apply(variables, tokens, lengths)
  np.testing.assert_array_equal(apply(variables, garbage, lengths), base)
  # Extra padding columns change nothing either (fixed-L batching).
  padded = jnp.pad(tokens, ((0, 0), (0, 3)))
  np.testing.assert_allclose(apply(variables, padded, lengths), base,
                             atol=1e-6)
  # ... but a token inside the caption does.
  changed = tokens.at[0, 0].set(tokens[0, 0] % 19 + 1)
  assert not np.allclose(apply(variables, changed, lengths)[0], base[0])


def test_text_encoder_rejects_bad_shapes():
  enc = models.TextEncoder(vocab_size=5, word_dim=2, embed_size=3)
  with pytest.raises(ValueError, match="tokens"):
    enc.init(jax.random.key(0), jnp.ones((2, 3, 1), int), jnp.array([1, 2]))
  with pytest.raises(ValueError, match="lengths"):
    enc.init(jax.random.key(0), jnp.ones((2, 3), int), jnp.array([[1, 2]]))


# ---------------------------------------------------------------- pooling
def test_max_pool_image_encoder_matches_numpy_with_hand_weights():
  images = RNG.normal(size=(3, 4, 5))
  kernel = RNG.normal(size=(5, 6))
  bias = RNG.normal(size=6)
  enc = models.ImageEncoder(embed_size=6, pooling="max")
  params = {"fc": {"kernel": jnp.float32(kernel), "bias": jnp.float32(bias)}}
  got = enc.apply({"params": params}, jnp.float32(images))
  np.testing.assert_allclose(
      got, np_l2norm(np.max(images @ kernel + bias, axis=1)), rtol=1e-5,
      atol=1e-6)
  mask = np.array([[1, 1, 1, 1], [1, 0, 0, 1], [0, 0, 1, 0]], bool)
  got = enc.apply({"params": params}, jnp.float32(images), jnp.asarray(mask))
  want = np.stack([np.max((images[b] @ kernel + bias)[mask[b]], axis=0)
                   for b in range(3)])
  np.testing.assert_allclose(got, np_l2norm(want), rtol=1e-5, atol=1e-6)


def test_max_pool_hand_values():
  f = jnp.array([[[1.0, -5.0], [3.0, -2.0], [9.0, 9.0]]])
  np.testing.assert_array_equal(models.max_pool(f), [[9.0, 9.0]])
  np.testing.assert_array_equal(
      models.max_pool(f, jnp.array([[True, True, False]])), [[3.0, -2.0]])
  with pytest.raises(ValueError, match="mask"):
    models.max_pool(f, jnp.ones((1, 2), bool))


def test_positional_encoding_matches_formula():
  pe = models.positional_encoding(5, 6)
  p, i = np.arange(5)[:, None], np.arange(3)[None]
  angle = p / 10000.0 ** (2 * i / 6)
  np.testing.assert_allclose(pe[:, 0::2], np.sin(angle), atol=1e-6)
  np.testing.assert_allclose(pe[:, 1::2], np.cos(angle), atol=1e-6)
  with pytest.raises(ValueError, match="dim"):
    models.positional_encoding(5, 3)


def test_sort_descending_matches_numpy():
  f = RNG.normal(size=(2, 5, 3))
  mask = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
  got = models.sort_descending(jnp.float32(f), jnp.asarray(mask))
  for b in range(2):
    n = mask[b].sum()
    np.testing.assert_allclose(got[b, :n], -np.sort(-f[b][mask[b]], axis=0),
                               rtol=1e-6)
    np.testing.assert_array_equal(got[b, n:], 0.0)


def test_gpo_weights_and_pooled_values():
  features = jnp.asarray(RNG.normal(size=(3, 6, 4)), jnp.float32)
  mask = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [0, 1, 0, 1, 1, 0]], bool)
  gpo = models.GPO()
  params = jax.jit(gpo.init)(jax.random.key(6), features, jnp.asarray(mask))
  apply = jax.jit(gpo.apply)
  pooled, weights = apply(params, features, jnp.asarray(mask))
  np.testing.assert_allclose(jnp.sum(weights, axis=1), 1.0, atol=1e-6)
  counts = mask.sum(1)
  for b, n in enumerate(counts):
    np.testing.assert_array_equal(weights[b, n:], 0.0)
    assert np.all(weights[b, :n] > 0)
  np.testing.assert_allclose(pooled, np_gpo_pool(features, weights, mask),
                             rtol=1e-5, atol=1e-6)
  # Weights depend only on the number of valid regions, so a masked image
  # pools exactly like the same image with the padded regions removed.
  for b in range(3):
    kept = features[b:b + 1, mask[b]]
    alone, alone_w = apply(params, kept)
    np.testing.assert_allclose(alone, pooled[b:b + 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(alone_w[0], weights[b, :counts[b]], rtol=1e-5,
                               atol=1e-7)


def test_gpo_is_permutation_invariant_over_regions():
  features = jnp.asarray(RNG.normal(size=(2, 5, 3)), jnp.float32)
  gpo = models.GPO(pe_dim=8, hidden=4)
  params = jax.jit(gpo.init)(jax.random.key(7), features)
  apply = jax.jit(gpo.apply)
  perm = np.array([3, 0, 4, 1, 2])
  np.testing.assert_allclose(apply(params, features[:, perm])[0],
                             apply(params, features)[0], rtol=1e-6)


def test_gpo_image_encoder_unit_norm_and_mask():
  images = jnp.asarray(RNG.normal(size=(2, 5, 7)), jnp.float32)
  mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
  enc = models.ImageEncoder(embed_size=4, pooling="gpo")
  variables = jax.jit(enc.init)(jax.random.key(8), images, mask)
  apply = jax.jit(enc.apply)
  out = apply(variables, images, mask)
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-6)
  # Garbage in masked regions cannot leak into the embedding.
  noisy = images.at[1, 2:].set(100.0)
  np.testing.assert_allclose(apply(variables, noisy, mask), out,
                             atol=1e-6)


def test_image_encoder_rejects_bad_arguments():
  with pytest.raises(ValueError, match="pooling"):
    models.ImageEncoder(pooling="mean").init(jax.random.key(0),
                                             jnp.ones((1, 2, 3)))
  with pytest.raises(ValueError, match="images"):
    models.ImageEncoder().init(jax.random.key(0), jnp.ones((2, 3)))


# ---------------------------------------------------------------- full model
def test_l2_normalize_matches_official_formula_and_is_safe_at_zero():
  x = RNG.normal(size=(3, 4))
  np.testing.assert_allclose(models.l2_normalize(jnp.float32(x)), np_l2norm(x),
                             rtol=1e-6)
  zero_grad = jax.grad(lambda v: models.l2_normalize(v).sum())(jnp.zeros(3))
  assert np.all(np.isfinite(zero_grad))


def tiny_model(**kw):
  return models.VSEModel(vocab_size=20, word_dim=3, embed_size=5, **kw)


@pytest.mark.parametrize("pooling,bidirectional", [("max", False),
                                                   ("gpo", True)])
def test_vse_model_shapes_methods_and_grads(pooling, bidirectional):
  model = tiny_model(pooling=pooling, bidirectional=bidirectional)
  images = jnp.asarray(RNG.normal(size=(4, 3, 7)), jnp.float32)
  tokens, lengths = tiny_text_batch()
  variables = jax.jit(model.init)(jax.random.key(9), images, tokens, lengths)
  assert set(variables["params"]) == {"image_encoder", "text_encoder"}
  img, cap = jax.jit(model.apply)(variables, images, tokens, lengths)
  assert img.shape == cap.shape == (4, 5)
  assert img.dtype == cap.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(img, axis=-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(cap, axis=-1), 1.0, atol=1e-6)
  encode_images = jax.jit(functools.partial(model.apply,
                                            method=model.encode_images))
  np.testing.assert_allclose(encode_images(variables, images), img, atol=1e-6)
  encode_texts = jax.jit(functools.partial(model.apply, method="encode_texts"))
  np.testing.assert_allclose(encode_texts(variables, tokens, lengths), cap,
                             atol=1e-6)

  @jax.jit
  def loss(params):
    i, c = model.apply({"params": params}, images, tokens, lengths)
    return -jnp.trace(i @ c.T)

  grads = jax.grad(loss)(variables["params"])
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert all(np.any(g != 0) for g in leaves)  # every parameter is used


def test_initialisation_matches_official_code():
  model = models.VSEModel(vocab_size=500, word_dim=30, embed_size=40)
  images = jnp.ones((1, 2, 60))
  tokens, lengths = jnp.ones((1, 3), jnp.int32), jnp.array([3])
  params = jax.jit(model.init)(jax.random.key(10), images, tokens,
                               lengths)["params"]
  fc = params["image_encoder"]["fc"]
  r = np.sqrt(6.0) / np.sqrt(60 + 40)  # Xavier uniform
  assert np.abs(fc["kernel"]).max() <= r and np.abs(fc["kernel"]).max() > 0.95 * r
  np.testing.assert_allclose(np.std(fc["kernel"]), r / np.sqrt(3), rtol=0.05)
  np.testing.assert_array_equal(fc["bias"], 0.0)
  table = params["text_encoder"]["embed"]["embedding"]
  assert table.shape == (500, 30)
  assert np.abs(table).max() <= 0.1 and np.abs(table).max() > 0.099
  np.testing.assert_allclose(np.std(table), 0.1 / np.sqrt(3), rtol=0.03)
  limit = 1 / np.sqrt(40)  # PyTorch's GRU default
  for name, w in params["text_encoder"]["gru"]["forward"].items():
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit, name


def test_create_model_from_config():
  cfg = ml_collections.ConfigDict(dict(
      vocab_size=11, word_dim=3, embed_size=4, pooling="gpo",
      bidirectional=True, dtype="bfloat16"))
  model = models.create_model(cfg)
  assert (model.vocab_size, model.word_dim, model.embed_size, model.pooling,
          model.bidirectional) == (11, 3, 4, "gpo", True)
  assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32
  images = jnp.ones((2, 3, 5))
  tokens, lengths = jnp.ones((2, 4), jnp.int32), jnp.array([4, 2])
  variables = jax.jit(model.init)(jax.random.key(0), images, tokens, lengths)
  img, cap = jax.jit(model.apply)(variables, images, tokens, lengths)
  assert img.dtype == cap.dtype == jnp.float32  # embeddings stay f32
  assert jax.tree.leaves(variables)[0].dtype == jnp.float32
  assert models.create_model(ml_collections.ConfigDict(
      dict(vocab_size=3))).dtype is None


@pytest.mark.parametrize("fields,match", [
    (dict(word_dim=3), "vocab_size"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(vocab_size=5, pooling="avg"), "pooling"),
    (dict(vocab_size=5, poolng="max"), "poolng"),
    (dict(vocab_size=5, dtype="float31"), "dtype"),
])
def test_create_model_rejects_bad_config(fields, match):
  with pytest.raises(ValueError, match=match):
    models.create_model(ml_collections.ConfigDict(fields))
