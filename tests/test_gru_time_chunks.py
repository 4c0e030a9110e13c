"""GRU work skipped past the longest length, in chunks of timesteps.

The batches here are wide enough (B >= 128 rows) that the chunks hold fewer
steps than L, so whole chunks really are skipped.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax.models import gru as gru_lib

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("length,batch,chunk", [(8, 128, 4), (6, 128, 3),
                                                (7, 128, 1), (8, 600, 1),
                                                (5, 3, 5)])
def test_chunk_steps(length, batch, chunk):
  assert gru_lib._chunk_steps(length, batch) == chunk


@pytest.mark.parametrize("num_steps", [1, 3, 4, 5, 8])
def test_input_projection_values_and_vjp_match_numpy(num_steps):
  length, batch, dim, out = 8, 128, 3, 5  # chunks of 4 steps
  xs, g = RNG.normal(size=(length, batch, dim)), RNG.normal(size=(length, batch, out))
  kernel, bias = RNG.normal(size=(dim, out)), RNG.normal(size=out)
  kept = -(-num_steps // 4) * 4  # steps up to the end of the last used chunk
  live = (np.arange(length) < kept)[:, None, None]
  want = np.where(live, xs @ kernel + bias, 0.0)
  want_dxs = np.where(live, g @ kernel.T, 0.0)
  want_dk = np.einsum("tbf,tbo->fo", xs * live, g)
  want_db = (g * live).sum((0, 1))
  args = [jnp.float32(a) for a in (xs, kernel, bias)]
  got, pullback = jax.vjp(
      lambda *a: gru_lib.input_projection(*a, jnp.int32(num_steps)), *args)
  for name, a, e in zip(["out", "d_xs", "d_kernel", "d_bias"],
                        (got, *pullback(jnp.float32(g))),
                        (want, want_dxs, want_dk, want_db)):
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4, err_msg=name)


def reference_layer(params, inputs, lengths):
  """GRULayer in plain JAX autodiff: full-length projection, masked scan."""
  xs = jnp.swapaxes(inputs, 0, 1) @ params["input_kernel"] + params["input_bias"]

  def step(h, inputs):
    t, x_t = inputs
    new, _ = gru_lib.gru_cell(h, x_t, params["recurrent_kernel"],
                              params["recurrent_bias"])
    return jnp.where((t < lengths)[:, None], new, h), None

  h0 = jnp.zeros((inputs.shape[0], params["recurrent_kernel"].shape[0]))
  final, _ = jax.lax.scan(step, h0, (jnp.arange(xs.shape[0]), xs))
  return final


@pytest.mark.parametrize("max_length", [3, 5, 12])
def test_gru_layer_grads_with_skipped_chunks_match_autodiff(max_length):
  length, batch, dim, hidden = 12, 128, 3, 4  # chunks of 4 steps
  inputs = jnp.float32(RNG.normal(size=(batch, length, dim)))
  lengths = jnp.int32(RNG.integers(1, max_length + 1, batch)).at[0].set(
      max_length)
  probe = jnp.float32(RNG.normal(size=(batch, hidden)))
  layer = gru_lib.GRULayer(hidden)
  params = layer.init(jax.random.key(0), inputs, lengths)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)) * probe)
  fast = lambda p, x: layer.apply(p, x, lengths)[1]
  slow = lambda p, x: reference_layer(p["params"], x, lengths)
  got = jax.jit(jax.value_and_grad(loss(fast), (0, 1)))(params, inputs)
  want = jax.jit(jax.value_and_grad(loss(slow), (0, 1)))(params, inputs)
  jax.tree.map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-4,
                                                       atol=1e-5), got, want)
