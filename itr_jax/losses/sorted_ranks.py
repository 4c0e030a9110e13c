"""Smooth ranks in O(N log N + N * M) per row: sort + linear recurrences.

With u = scores / tau, the smooth rank r_j = 1 + sum_{k != j} sigma(u_k - u_j)
costs O(N) per candidate if summed directly. Sorting each row ascending,
v_0 <= ... <= v_{N-1}, and writing g(a) = 1 / (1 + e^a) for a >= 0,

  r_p = 1 + sum_{k > p} (1 - g(v_k - v_p)) + sum_{k < p} g(v_p - v_k)
      = (N - p) - hi_p + lo_p,

(ties give g(0) = 1/2 = sigma(0) on either side, as the exact formula). With
g(a) ~ sum_m c_m e^{-lambda_m a} (`logistic_fits`: M = 16 terms, relative
error below float32's eps / 4 on all of a >= 0, tail included), each term of
lo_p = sum_m c_m B_m(p) is a first-order linear recurrence over the sorted row

  B_m(p) = f_m(p) * (B_m(p - 1) + 1),   f_m(p) = exp(-lambda_m (v_p - v_{p-1})),

whose factors are <= 1 (stable); hi_p runs the same recurrence from the top.
The backward pass, dL/du_p = sum_j h(|v_j - v_p|) (a_j - a_p) with
h = sigma' ~ sum_m d_m e^{-lambda_m a}, runs weighted recurrences on the
differences (no cancellation of large sums)

  D_m(p) = f_m(p) * (D_m(p - 1) + (B_m(p - 1) + 1) (a_{p-1} - a_p))

and its mirror from the top, under a custom VJP that keeps only the sorted
values and the permutation (the per-step states are recomputed, never stored).
Both passes restore an exact invariant afterwards (ranks sum to N (N + 1) / 2,
the gradient sums to 0 over a row). The fit's coefficients alternate in sign
(sum |H_m| / h(0) ~ 140), which amplifies float32 rounding in rows with large
groups of tied scores: there the gradient is ~5e-6 relative off (the chunked
kernel: ~2e-7); on rows without ties both are at the same level.

Memory: rows go through the sort, the scans and the scatter `row_block` at a
time (`row_blocks`), in the forward and the backward pass, so besides the
[Q, N] inputs, outputs and residuals only O(row_block * N) is live; the
per-step states [row_block, M] are scan carries, never stored. The S-NDCG
losses use a fused version (`smooth_ndcg`) whose only [Q, N] residual is the
permutation as uint16.

Scans: `scan="sequential"` runs N - 1 dependent steps (cheapest on CPU);
`scan="associative"` composes the affine maps x -> f x + b with
`lax.associative_scan` (O(log N) depth, [N, row_block, M] states per block),
for accelerators where a length-N sequential scan is latency-bound.

Sorting: XLA's CPU sort is ~6x faster for one int32 operand than for floats or
for (key, index) pairs, so the stable argsort comes from two one-operand
integer sorts of the order-preserving integer image of u (`order_key`). In
float32, a least-significant-digit radix argsort: 16-bit digits, each sorted
packed with a 16-bit position (`_radix_argsort`, no binary search). In
float64, the sorted keys, then first_position(u_j) * N + j (first_position by
binary search), which is N * N < 2^31, hence N <= 46340. The forward pass
inverts the permutation by a scatter; the backward pass reuses it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from itr_jax.losses import logistic_fits

# Largest N for which first_position * N + index fits in an int32.
MAX_CANDIDATES = 46340
# Rows per block of the forward and backward passes (see `row_blocks`).
DEFAULT_ROW_BLOCK = 256
# How the recurrences run: "sequential" (lax.scan, N - 1 steps of O(Q * M)
# work) or "associative" (lax.associative_scan: O(log N) depth, O(N * Q * M)
# memory per block; for latency-bound accelerators, see the README).
SCANS = ("sequential", "associative")


def _fit(dtype):
  """(lambdas, g coefficients, h coefficients) as numpy arrays for `dtype`."""
  return tuple(np.asarray(x, dtype) for x in (logistic_fits.LAMBDAS,
                                               logistic_fits.G, logistic_fits.H))


def order_key(u: jax.Array) -> jax.Array:
  """Integers ordered like the floats `u`, -0.0 and +0.0 equal (no NaNs).

  XLA's CPU sort and binary search are several times faster on these than on
  the floats themselves.

  >>> x = jnp.array([2.5, -1.0, 0.0, -3.0, -0.0])
  >>> bool((jnp.argsort(order_key(x)) == jnp.argsort(x)).all())
  True
  """
  int_type = jnp.int64 if u.dtype.itemsize == 8 else jnp.int32
  # Signed zeros tie (XLA folds u + 0.0 into u, so compare instead).
  bits = jax.lax.bitcast_convert_type(jnp.where(u == 0, jnp.zeros((), u.dtype), u),
                                      int_type)
  # Negative floats order backwards in their bit patterns: flip all but sign.
  return jnp.where(bits < 0, bits ^ jnp.iinfo(int_type).max, bits)


def _from_order_key(key: jax.Array, dtype) -> jax.Array:
  bits = jnp.where(key < 0, key ^ jnp.iinfo(key.dtype).max, key)
  return jax.lax.bitcast_convert_type(bits, dtype)


def sort_rows(u: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(v, perm): each row of `u` [Q, N] ascending and v = u[perm] (ties by index)."""
  n = u.shape[1]
  if u.dtype.itemsize == 4:
    perm = _radix_argsort(order_key(u))
    return jnp.take_along_axis(u, perm, axis=1), perm
  v = _from_order_key(jax.lax.sort(order_key(u), dimension=1), u.dtype)
  first = jax.vmap(functools.partial(jnp.searchsorted, side="left"))(v, u)
  index = jax.lax.broadcasted_iota(jnp.int32, u.shape, 1)
  packed = jax.lax.sort(first.astype(jnp.int32) * n + index, dimension=1)
  return v, packed % n


def _radix_argsort(key: jax.Array) -> jax.Array:
  """Stable argsort of each row of int32 `key` [Q, N] (N <= 2^16), two int sorts.

  Least-significant digit first: sort (low 16 bits, index) packed in one
  uint32, then, stably, (high 16 bits, position after the first pass).
  """
  digits = jax.lax.bitcast_convert_type(key, jnp.uint32) ^ jnp.uint32(1 << 31)
  index = jax.lax.broadcasted_iota(jnp.uint32, key.shape, 1)
  low_16 = jnp.uint32(0xFFFF)
  by_low = jax.lax.sort(((digits & low_16) << 16) | index, dimension=1) & low_16
  by_low = by_low.astype(jnp.int32)
  high = jnp.take_along_axis(digits >> 16, by_low, axis=1)
  by_high = jax.lax.sort((high << 16) | index, dimension=1) & low_16
  return jnp.take_along_axis(by_low, by_high.astype(jnp.int32), axis=1)


def unsort(x: jax.Array, perm: jax.Array) -> jax.Array:
  """out[q, perm[q, p]] = x[q, p]: undoes the sort with a scatter."""
  rows = jax.lax.broadcasted_iota(jnp.int32, x.shape, 0)
  return jnp.zeros_like(x).at[rows, perm].set(x, unique_indices=True)


def _zero_state(v: jax.Array, m: int) -> jax.Array:
  """[Q, M] zeros typed like `v` (under shard_map: varying like the rows)."""
  return jnp.broadcast_to(jnp.where(True, jnp.zeros((), v.dtype), v[:, :1]),
                          (v.shape[0], m))


def _scan_both_ways(step, init, xs_up, xs_down):
  """Runs `step` over the gaps from the bottom and from the top; [N, Q] outputs.

  Output row p of the upward scan is the state after gap p - 1 (row 0: no
  candidate below, 0); the downward one is the state after gap p (row N - 1:
  0).
  """
  _, up = jax.lax.scan(step, init, xs_up)
  _, down = jax.lax.scan(step, init, xs_down, reverse=True)
  return _with_ends(up, down)


def row_blocks(fn, *xs, row_block: int):
  """fn over blocks of `row_block` rows of the [Q, ...] arrays `xs`; [Q, ...] outputs.

  Only one block's sort, scans and [N, row_block] outputs are live at a time,
  so the temporary memory is O(row_block * N) on top of the [Q, N] inputs and
  outputs. Q is zero-padded up to a multiple of the block (rows of zeros are
  all ties: finite, and dropped).
  """
  q = xs[0].shape[0]
  if q <= row_block:
    return fn(*xs)
  num = -(-q // row_block)

  def blocks(x):
    x = jnp.pad(x, [(0, num * row_block - q)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((num, row_block) + x.shape[1:])

  out = jax.lax.map(lambda args: fn(*args), tuple(blocks(x) for x in xs))
  return jax.tree.map(lambda y: y.reshape((num * row_block,) + y.shape[2:])[:q], out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def sorted_smooth_ranks(u: jax.Array, row_block: int = DEFAULT_ROW_BLOCK,
                        scan: str = "sequential") -> jax.Array:
  """r_qj = 1 + sum_{k != j} sigma(u_qk - u_qj) for u [Q, N] (see module doc).

  Rows are processed `row_block` at a time (forward and backward), so the
  temporary memory is O(row_block * N) besides the [Q, N] arrays ("associative"
  `scan`: O(row_block * N * M)).

  >>> import numpy as np
  >>> r = sorted_smooth_ranks(jnp.array([[90.0, 10.0, 50.0]]))
  >>> np.round(np.asarray(r), 3).tolist()
  [[1.0, 3.0, 2.0]]
  """
  return _forward(u, row_block, scan)[0]


def _check_scan(scan: str) -> None:
  if scan not in SCANS:
    raise ValueError(f"scan must be one of {SCANS}, got {scan!r}.")


def check_candidates(n: int) -> None:
  """Raises if N is too large for the packed int32 sort key."""
  if n > MAX_CANDIDATES:
    raise ValueError(
        f'rank_method="sorted" supports at most {MAX_CANDIDATES} candidates per '
        f'row, got {n}; use rank_method="chunked".')


def _affine_scan(factor, offset, reverse):
  """x_p = factor_p * x_{p-1} + offset_p (x_{-1} = 0) along axis 0, all p.

  `lax.associative_scan` over the affine maps: O(log N) depth instead of N
  sequential steps, at the price of materialising [N - 1, Q, M] states.
  """
  def compose(first, then):
    return first[0] * then[0], then[0] * first[1] + then[1]

  return jax.lax.associative_scan(compose, (factor, offset), reverse=reverse)[1]


def _with_ends(up, down):
  """[N - 1, Q] scan outputs -> [N, Q]: no candidate below row 0 / above N - 1."""
  zero = jnp.zeros_like(up[:1])
  return jnp.concatenate([zero, up]), jnp.concatenate([down, zero])


def ranks_in_sorted_order(v: jax.Array, scan: str = "sequential") -> jax.Array:
  """Smooth ranks [Q, N] of the ascending rows v [Q, N], in that order.

  `scan` (see `SCANS`) only changes how the recurrences are evaluated.
  """
  _check_scan(scan)
  n = v.shape[1]
  lambdas, g_coef, _ = _fit(v.dtype)
  gaps = (v[:, 1:] - v[:, :-1]).T  # [N - 1, Q], >= 0

  def step(state, gap):  # state [Q, M]: sum over one side of e^{-lambda dist}
    state = jnp.exp(-gap[:, None] * lambdas) * (state + 1.0)
    return state, state @ g_coef

  if scan == "sequential":
    lo, hi = _scan_both_ways(step, _zero_state(v, lambdas.size), gaps, gaps)
  else:
    factor = jnp.exp(-gaps[..., None] * lambdas)  # [N - 1, Q, M]
    lo, hi = _with_ends(_affine_scan(factor, factor, False) @ g_coef,
                        _affine_scan(factor, factor, True) @ g_coef)
  position = jnp.arange(n, dtype=v.dtype)[:, None]
  ranks = (n - position) - hi + lo  # [N, Q]
  # sigma(x) + sigma(-x) = 1 makes the exact ranks of a row sum to N (N + 1) / 2;
  # restoring that removes the common part of the rounding error.
  return (ranks - jnp.mean(ranks, axis=0) + (n + 1) / 2).T


def grad_in_sorted_order(v: jax.Array, a: jax.Array,
                         scan: str = "sequential") -> jax.Array:
  """dL/dv [Q, N] for ascending rows v and a = dL/dranks, both in sorted order."""
  _check_scan(scan)
  lambdas, _, h_coef = _fit(v.dtype)
  gaps = (v[:, 1:] - v[:, :-1]).T
  steps = (a[:, :-1] - a[:, 1:]).T  # a_{p-1} - a_p at gap p - 1

  def step(state, x):  # (B, D) of the module docstring, each [Q, M]
    below, diff = state
    gap, step_a = x
    factor = jnp.exp(-gap[:, None] * lambdas)
    diff = factor * (diff + (below + 1.0) * step_a[:, None])
    below = factor * (below + 1.0)
    return (below, diff), diff @ h_coef

  if scan == "sequential":
    zero = _zero_state(v, lambdas.size)
    lo, hi = _scan_both_ways(step, (zero, zero), (gaps, steps), (gaps, -steps))
  else:
    factor = jnp.exp(-gaps[..., None] * lambdas)  # [N - 1, Q, M]
    zero = jnp.zeros_like(factor[:1])
    # D_p = f_p D_{p-1} + f_p (B_{p-1} + 1) step_p, with B the ranks' states.
    below = jnp.concatenate([zero, _affine_scan(factor, factor, False)[:-1]])
    above = jnp.concatenate([_affine_scan(factor, factor, True)[1:], zero])
    lo, hi = _with_ends(
        _affine_scan(factor, factor * (below + 1.0) * steps[..., None], False) @ h_coef,
        _affine_scan(factor, factor * (above + 1.0) * -steps[..., None], True) @ h_coef)
  # Ranks do not change when a row is shifted, so the exact gradient sums to 0
  # over the row; projecting onto that removes the rounding error that the
  # gradient w.r.t. tau (sum_p du_p * u_p / tau, |u| up to 1 / tau) magnifies.
  grad = lo + hi
  return (grad - jnp.mean(grad, axis=0)).T


def _forward(u, row_block, scan):
  check_candidates(u.shape[1])

  def rows(u):
    v, perm = sort_rows(u)
    return unsort(ranks_in_sorted_order(v, scan), perm), v, perm

  ranks, v, perm = row_blocks(rows, u, row_block=row_block)
  return ranks, (v, perm)


def _backward(row_block, scan, residuals, a):
  v, perm = residuals

  def rows(v, perm, a):
    return unsort(grad_in_sorted_order(v, jnp.take_along_axis(a, perm, axis=1), scan),
                  perm)

  return (row_blocks(rows, v, perm, a.astype(v.dtype), row_block=row_block),)


sorted_smooth_ranks.defvjp(_forward, _backward)
