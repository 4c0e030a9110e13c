"""A length-aware (bi)GRU, fast on CPU and GPU.

Three choices make it fast without changing the maths of PyTorch's `nn.GRU`:

* the input projection `W_i x + b_i` is computed outside the time loop, in a
  few [c*B, F] x [F, 3H] matmuls over chunks of c timesteps; only the
  [B, H] x [H, 3H] recurrent matmul stays inside;
* timesteps at or after the longest valid length of the batch are skipped with
  `lax.cond` in the loops and a dynamic trip count over the chunks (captions
  of ~12-20 tokens padded to a fixed L cost ~max length, not L, with no
  dynamic shapes);
* a hand-written VJP: the backward loop emits the per-step gate gradients and
  the recurrent-weight gradient is a few [H, c*B] x [c*B, 3H] matmuls over
  chunks of c steps afterwards (only up to the longest length), instead of an
  [H, 3H] accumulation inside every step as autodiff does.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from itr_jax.models.initializers import symmetric_uniform

Dtype = Any


def gru_cell(h, x_proj, kernel, bias):
  r"""One GRU step on a pre-projected input; returns `(h', (r, z, n, h_n))`.

  With `x_proj = W_i x + b_i` and gate order r, z, n (PyTorch's), and
  `[h_r, h_z, h_n] = W_h h + b_h`:

  .. math::
      r = \sigma(x_r + h_r), \quad z = \sigma(x_z + h_z), \quad
      n = \tanh(x_n + r \odot h_n), \quad h' = (1 - z) \odot n + z \odot h

  >>> h = jnp.zeros((1, 2))
  >>> new_h, _ = gru_cell(h, jnp.zeros((1, 6)), jnp.zeros((2, 6)), jnp.zeros(6))
  >>> new_h
  Array([[0., 0.]], dtype=float32)
  """
  h_proj = h @ kernel + bias
  x_r, x_z, x_n = jnp.split(x_proj, 3, axis=-1)
  h_r, h_z, h_n = jnp.split(h_proj, 3, axis=-1)
  r = jax.nn.sigmoid(x_r + h_r)
  z = jax.nn.sigmoid(x_z + h_z)
  n = jnp.tanh(x_n + r * h_n)
  return (1.0 - z) * n + z * h, (r, z, n, h_n)


def _scan_forward(x_proj, kernel, bias, num_steps):
  """States [L, B, H] and gate residuals; steps t >= num_steps keep the state."""
  hidden = kernel.shape[0]

  def step(h, inputs):
    t, x_t = inputs

    def skip(h):
      zeros = jnp.zeros_like(h)
      return h, (zeros, zeros, zeros, zeros)

    h, gates = jax.lax.cond(
        t < num_steps, lambda h: gru_cell(h, x_t, kernel, bias), skip, h)
    return h, (h, gates)

  h0 = jnp.zeros(x_proj.shape[1:-1] + (hidden,), x_proj.dtype)
  steps = jnp.arange(x_proj.shape[0])
  _, (states, gates) = jax.lax.scan(step, h0, (steps, x_proj))
  return states, gates


@jax.custom_vjp
def gru_scan(x_proj, kernel, bias, num_steps):
  """GRU states `[L, B, H]` for pre-projected inputs `x_proj [L, B, 3H]`.

  Starts from h = 0 and runs `gru_cell` for t < `num_steps` (an int32 scalar,
  may be traced); later states repeat the last computed one. Differentiable in
  `x_proj`, `kernel` and `bias` (first order, hand-written VJP).

  >>> states = gru_scan(jnp.ones((4, 2, 6)), jnp.zeros((2, 6)), jnp.zeros(6), 3)
  >>> states.shape
  (4, 2, 2)
  """
  return _scan_forward(x_proj, kernel, bias, num_steps)[0]


def _gru_scan_fwd(x_proj, kernel, bias, num_steps):
  states, gates = _scan_forward(x_proj, kernel, bias, num_steps)
  return states, (states, gates, kernel, num_steps)


def _gru_scan_bwd(residuals, d_states):
  states, (r, z, n, h_n), kernel, num_steps = residuals
  prev_states = jnp.concatenate([jnp.zeros_like(states[:1]), states[:-1]], 0)

  def step(d_h_next, inputs):
    t, d_out, h, r, z, n, h_n = inputs
    d_h = d_out + d_h_next

    def run(d_h):
      d_n = d_h * (1.0 - z) * (1.0 - n * n)  # through tanh
      d_z = d_h * (h - n) * z * (1.0 - z)  # through sigmoid
      d_r = d_n * h_n * r * (1.0 - r)
      d_x_proj = jnp.concatenate([d_r, d_z, d_n], axis=-1)
      d_h_proj = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
      return d_h * z + d_h_proj @ kernel.T, (d_x_proj, d_h_proj)

    def skip(d_h):  # a skipped step is the identity on h
      zeros = jnp.zeros(d_h.shape[:-1] + (3 * d_h.shape[-1],), d_h.dtype)
      return d_h, (zeros, zeros)

    return jax.lax.cond(t < num_steps, run, skip, d_h)

  steps = jnp.arange(states.shape[0])
  _, (d_x_proj, d_h_proj) = jax.lax.scan(
      step, jnp.zeros_like(states[0]),
      (steps, d_states, prev_states, r, z, n, h_n), reverse=True)
  d_kernel, d_bias = _prefix_weight_grad(prev_states, d_h_proj, num_steps)
  return d_x_proj, d_kernel.astype(kernel.dtype), d_bias.astype(d_x_proj.dtype), None


_CHUNK_ROWS = 512  # rows (timesteps x batch) per matmul over a time chunk


def _chunk_steps(length, batch):
  """The largest divisor c of `length` with c·batch <= max(_CHUNK_ROWS, batch)."""
  return max(c for c in range(1, length + 1)
             if length % c == 0 and c * batch <= max(_CHUNK_ROWS, batch))


def _prefix_weight_grad(inputs, grads, num_steps):
  """(Σ_t inputs_tᵀ grads_t, Σ_t Σ_b grads_t) over timesteps t < num_steps.

  `inputs` [L, B, F] and `grads` [L, B, G] are time-major. Used where
  grads_t = 0 for t >= num_steps (or the function ignores those steps): a
  loop of [F, c·B] x [c·B, G] matmuls over chunks of c steps stops after
  ceil(num_steps / c) chunks. On a 2-core CPU (B = 128, H = 1024, L = 32, 20
  valid steps) the recurrent-weight gradient so takes ~88 ms of CPU time;
  one einsum over all L steps takes ~170 ms. Chunks are sliced along time
  only, so a batch sharded over devices stays sharded.
  """
  length, batch = grads.shape[:2]
  chunk = _chunk_steps(length, batch)
  acc_dtype = jnp.promote_types(grads.dtype, jnp.float32)

  def add_chunk(i, acc):
    d_kernel, d_bias = acc
    x, g = (jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk)
            for a in (inputs, grads))
    return (d_kernel + jnp.einsum("tbf,tbg->fg", x, g,
                                  preferred_element_type=acc_dtype),
            d_bias + jnp.sum(g, axis=(0, 1), dtype=acc_dtype))

  init = (jnp.zeros((inputs.shape[-1], grads.shape[-1]), acc_dtype),
          jnp.zeros(grads.shape[-1:], acc_dtype))
  return jax.lax.fori_loop(0, _num_chunks(num_steps, length, chunk),
                           add_chunk, init)


def _num_chunks(num_steps, length, chunk):
  return jnp.minimum((num_steps + chunk - 1) // chunk, length // chunk)


def _prefix_map(fn, xs, num_steps, out_dim):
  """`fn` [c, B, F] -> [c, B, out_dim] over the chunks of steps t < num_steps.

  Returns [L, B, out_dim] (zeros on the chunks after the last valid step).
  """
  length, batch = xs.shape[:2]
  chunk = _chunk_steps(length, batch)

  def map_chunk(i, out):
    x = jax.lax.dynamic_slice_in_dim(xs, i * chunk, chunk)
    return jax.lax.dynamic_update_slice_in_dim(out, fn(x).astype(out.dtype),
                                               i * chunk, axis=0)

  out = jnp.zeros((length, batch, out_dim), xs.dtype)
  return jax.lax.fori_loop(0, _num_chunks(num_steps, length, chunk),
                           map_chunk, out)


@jax.custom_vjp
def input_projection(xs, kernel, bias, num_steps):
  r"""`xs @ kernel + bias` on the timesteps before `num_steps` of `xs` [L, B, F].

  Computed in chunks of c timesteps (the largest divisor of L with c·B <=
  512) up to the chunk holding step `num_steps - 1`; later chunks are 0. The
  GRU never reads steps >= `num_steps`, so the projection and its two
  backward matmuls skip the padding past the longest caption. Differentiable
  in `xs`, `kernel` and `bias` (first order, exact for this function);
  `num_steps` is an int32 scalar, may be traced.

  >>> x = jnp.ones((4, 256, 2))  # L = 4, B = 256: chunks of c = 2 steps
  >>> input_projection(x, jnp.ones((2, 3)), jnp.zeros(3), 1)[:, 0, 0]
  Array([2., 2., 0., 0.], dtype=float32)
  """
  return _prefix_map(lambda x: x @ kernel + bias, xs, num_steps,
                     kernel.shape[1])


def _input_projection_fwd(xs, kernel, bias, num_steps):
  return (input_projection(xs, kernel, bias, num_steps),
          (xs, kernel, num_steps))


def _input_projection_bwd(residuals, d_out):
  xs, kernel, num_steps = residuals
  d_xs = _prefix_map(lambda g: g @ kernel.T, d_out, num_steps, xs.shape[-1])
  d_kernel, d_bias = _prefix_weight_grad(xs, d_out, num_steps)
  return (d_xs, d_kernel.astype(kernel.dtype), d_bias.astype(d_out.dtype),
          None)


input_projection.defvjp(_input_projection_fwd, _input_projection_bwd)


gru_scan.defvjp(_gru_scan_fwd, _gru_scan_bwd)


def reverse_valid_prefix(x: jax.Array, lengths: jax.Array) -> jax.Array:
  """Reverses `x[:lengths[b], b]` in place for each b; padding stays at the end.

  `x` is time-major [L, B, ...]. Applying it twice is the identity.

  >>> x = jnp.array([[1, 4], [2, 5], [3, 0]])  # [L=3, B=2]
  >>> reverse_valid_prefix(x, jnp.array([3, 2]))
  Array([[3, 5],
         [2, 4],
         [1, 0]], dtype=int32)
  """
  t = jnp.arange(x.shape[0])[:, None]
  # Row t of the output reads row lengths-1-t while t < lengths, else itself.
  source = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
  source = source.reshape(source.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, source, axis=0)


class GRULayer(nn.Module):
  """One GRU direction over padded batch-major sequences.

  `__call__(inputs [B, L, F], lengths [B]) -> (outputs [B, L, H], final [B, H])`.
  Forward (`reverse=False`): `final[b] = outputs[b, lengths[b] - 1]`. Backward
  (`reverse=True`): row b reads `inputs[b, lengths[b]-1], ..., inputs[b, 0]`,
  `outputs` is in the original order and `final[b] = outputs[b, 0]`, the state
  after the whole caption. Padding never enters either; outputs at padded
  positions are unspecified. Needs 1 <= lengths <= L (not checked under jit).

  Parameters (PyTorch names in brackets): `input_kernel` [F, 3H]
  (`weight_ih_l0.T`), `input_bias` [3H] (`bias_ih_l0`), `recurrent_kernel`
  [H, 3H] (`weight_hh_l0.T`), `recurrent_bias` [3H] (`bias_hh_l0`), all
  U(-1/sqrt(H), 1/sqrt(H)) like PyTorch's default.
  """
  features: int
  reverse: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, lengths):
    init = symmetric_uniform(1.0 / self.features ** 0.5)
    in_features, gates = inputs.shape[-1], 3 * self.features
    params = (
        self.param("input_kernel", init, (in_features, gates), self.param_dtype),
        self.param("input_bias", init, (gates,), self.param_dtype),
        self.param("recurrent_kernel", init, (self.features, gates),
                   self.param_dtype),
        self.param("recurrent_bias", init, (gates,), self.param_dtype))
    inputs, *params = nn.dtypes.promote_dtype(inputs, *params, dtype=self.dtype)
    input_kernel, input_bias, recurrent_kernel, recurrent_bias = params

    xs = jnp.swapaxes(inputs, 0, 1)  # time-major [L, B, F]
    if self.reverse:
      xs = reverse_valid_prefix(xs, lengths)
    num_steps = jnp.max(lengths)
    x_proj = input_projection(xs, input_kernel, input_bias, num_steps)
    states = gru_scan(x_proj, recurrent_kernel, recurrent_bias, num_steps)
    batch = jnp.arange(states.shape[1])
    final = states[lengths - 1, batch]
    if self.reverse:
      states = reverse_valid_prefix(states, lengths)
    return jnp.swapaxes(states, 0, 1), final


class GRU(nn.Module):
  """Single-layer GRU, optionally bidirectional with the directions averaged.

  `__call__(inputs [B, L, F], lengths [B]) -> (outputs [B, L, H], final [B, H])`.
  Unidirectional: `final` is the state after the last valid token. With
  `bidirectional=True`, a backward `GRULayer` reads each valid prefix in
  reverse; outputs are averaged position-wise (VSE-infinity's convention) and
  `final` is the mean of the two directions' final states (forward after token
  `lengths-1`, backward after token 0), i.e. the mean of PyTorch's `h_n`.

  >>> gru = GRU(features=8, bidirectional=True)
  >>> x = jnp.ones((2, 5, 3))
  >>> lengths = jnp.array([5, 2])
  >>> params = gru.init(jax.random.key(0), x, lengths)
  >>> outputs, final = gru.apply(params, x, lengths)
  >>> outputs.shape, final.shape
  ((2, 5, 8), (2, 8))
  """
  features: int
  bidirectional: bool = False
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, lengths):
    if inputs.ndim != 3:
      raise ValueError(
          f"inputs must be [batch, length, features], got shape {inputs.shape}.")
    if lengths.shape != inputs.shape[:1]:
      raise ValueError(f"lengths must have shape {inputs.shape[:1]} (one per "
                       f"sequence), got {lengths.shape}.")
    lengths = lengths.astype(jnp.int32)
    layer = lambda reverse, name: GRULayer(
        self.features, reverse=reverse, dtype=self.dtype,
        param_dtype=self.param_dtype, name=name)
    outputs, final = layer(False, "forward")(inputs, lengths)
    if self.bidirectional:
      back_outputs, back_final = layer(True, "backward")(inputs, lengths)
      outputs = (outputs + back_outputs) / 2
      final = (final + back_final) / 2
    return outputs, final
