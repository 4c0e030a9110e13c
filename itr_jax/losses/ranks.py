"""Ranks of candidates within each query row: smooth (differentiable) and hard.

For a query row `s_q` over N candidates, the smooth rank of candidate j is

  r_qj = 1 + sum_{k != j} sigma((s_qk - s_qj) / tau),
  sigma(x) = 1 / (1 + exp(clip(-x, -50, 50)))

(the official Listwise_ITR temperature sigmoid: the clip makes its gradient 0
for |x| > 50). The hard rank is r_qj = 1 + #{k : s_qk > s_qj}: tied candidates
share the best rank of their group.

`smooth_ranks` needs O(Q * N * chunk_size) memory instead of the O(Q * N^2) of
`dense_smooth_ranks`: it walks over chunks of candidates j, and its custom VJP
recomputes the sigmoids chunk by chunk instead of storing them. With
u = s / tau, x_qjk = u_qk - u_qj, a_qj = dL/dr_qj and
h_qjk = sigma'(x_qjk) * [|x_qjk| <= 50] (symmetric in j, k), the backward
pass is

  dL/du_qm = sum_j h_qmj * (a_qj - a_qm),

(the j = m term vanishes, so no diagonal mask is needed), and autodiff carries
dL/du to the scores and to tau.

The chunked kernel evaluates the unclipped logistic: in float32 it equals the
clipped one to within 2e-22 per term (sigma(50) already rounds to 1), and
sigma' beyond the clip is below 2e-22 (exactly 0 for x > 17 and x < -88)
instead of exactly 0. Clipping or masking would stop XLA on CPU from fusing the
[Q, chunk, N] elementwise work into its reduction, costing 4x in time and a
materialised [Q, chunk, N] buffer. `dense_smooth_ranks` keeps the literal
clipped formula as the reference.

`method="sorted"` computes the same ranks in O(Q * N * (log N + M)) time
instead of O(Q * N^2) by sorting each row and running linear recurrences over
an M-term exponential-sum fit of the logistic tail (`sorted_ranks`; exact to
float32 rounding, 2e-11 per term in float64). `method="auto"` picks
"chunked" below `AUTO_SORTED_MIN_CANDIDATES` candidates and "sorted" from
there on (crossover measured with benchmarks/loss_memory_time.py on CPU).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from itr_jax.losses import _validation
from itr_jax.losses import sorted_ranks

# The official sigmoid clips its exponent to [-50, 50].
_CLIP = 50.0
# Default number of candidates per chunk. On CPU, XLA fuses each chunk's
# [Q, chunk, N] sigmoid-and-reduce, so time is flat for chunks of 8 to 256
# (B = 512 to 2048); 32 bounds the buffer a backend that does not fuse would
# materialise to Q * 32 * N floats while keeping the scan short.
DEFAULT_CHUNK_SIZE = 32
RANK_METHODS = ("auto", "chunked", "sorted")
# "auto" switches to the sorted kernel from this many candidates per row.
AUTO_SORTED_MIN_CANDIDATES = 1024


def resolve_rank_method(method: str, num_candidates: int) -> str:
  """"chunked" or "sorted": `method`, or for "auto" the faster one for N.

  >>> resolve_rank_method("auto", 128), resolve_rank_method("auto", 4096)
  ('chunked', 'sorted')
  """
  _validation.check_choice("rank_method", method, RANK_METHODS)
  if method != "auto":
    return method
  return "sorted" if num_candidates >= AUTO_SORTED_MIN_CANDIDATES else "chunked"


def official_sigmoid(x: jax.Array) -> jax.Array:
  """sigma(x) = 1 / (1 + exp(clip(-x, -50, 50))), gradient 0 where clipped.

  >>> float(official_sigmoid(jnp.float32(0.0)))
  0.5
  """
  return 1.0 / (1.0 + jnp.exp(jnp.clip(-x, -_CLIP, _CLIP)))


def _working_dtype(x: jax.Array) -> jnp.dtype:
  # At least float32 (bf16 scores lose the ranks); float64 stays float64.
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def dense_smooth_ranks(scores: jax.Array, *, tau=0.01) -> jax.Array:
  """Smooth ranks [Q, N] of each row of `scores` [Q, N], O(Q * N^2) memory.

  The plain reference for `smooth_ranks` (same values, autodiff gradient).

  >>> import numpy as np
  >>> r = dense_smooth_ranks(jnp.array([[0.9, 0.1, 0.5]]), tau=0.01)
  >>> np.round(np.asarray(r), 3).tolist()
  [[1.0, 3.0, 2.0]]
  """
  _validation.check_rank("scores", scores, 2)
  _validation.check_positive("tau", tau)
  s = jnp.asarray(scores, _working_dtype(scores))
  n = s.shape[-1]
  x = (s[:, None, :] - s[:, :, None]) / tau  # x[q, j, k] = (s_qk - s_qj) / tau
  off_diagonal = ~jnp.eye(n, dtype=bool)
  return 1.0 + jnp.sum(jnp.where(off_diagonal, official_sigmoid(x), 0.0), axis=-1)


def _chunks(x: jax.Array, chunk_size: int) -> jax.Array:
  """[Q, N] -> [num_chunks, Q, chunk_size], zero-padding N up to a multiple."""
  q, n = x.shape
  num_chunks = -(-n // chunk_size)
  x = jnp.pad(x, ((0, 0), (0, num_chunks * chunk_size - n)))
  return x.reshape(q, num_chunks, chunk_size).transpose(1, 0, 2)


def _unchunk(x: jax.Array, n: int) -> jax.Array:
  """[num_chunks, Q, chunk_size] -> [Q, n], dropping the padded candidates."""
  num_chunks, q, chunk_size = x.shape
  return x.transpose(1, 0, 2).reshape(q, num_chunks * chunk_size)[:, :n]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _chunked_ranks(u: jax.Array, chunk_size: int) -> jax.Array:
  """r_qj = 1 + sum_{k != j} sigma(u_qk - u_qj), for u = scores / tau."""

  def chunk(u_j):  # u_j: [Q, C] candidates whose ranks this step computes.
    # The k = j term is sigma(0) = 1/2 exactly, so adding 1/2 instead of 1
    # replaces the diagonal mask. Padded candidates j only produce ranks
    # that `_unchunk` drops; k always runs over the N real candidates.
    x = u[:, None, :] - u_j[:, :, None]
    return 0.5 + jnp.sum(jax.nn.sigmoid(x), axis=-1)

  return _unchunk(jax.lax.map(chunk, _chunks(u, chunk_size)), u.shape[1])


def _chunked_ranks_fwd(u, chunk_size):
  return _chunked_ranks(u, chunk_size), u


def _chunked_ranks_bwd(chunk_size, u, a):
  a = a.astype(u.dtype)

  def chunk(args):  # Gradient for a chunk of candidates m.
    u_m, a_m = args
    x = u[:, None, :] - u_m[:, :, None]  # x[q, m, j] = u_qj - u_qm
    sig = jax.nn.sigmoid(x)
    return jnp.sum(sig * (1.0 - sig) * (a[:, None, :] - a_m[:, :, None]), axis=-1)

  du = jax.lax.map(chunk, (_chunks(u, chunk_size), _chunks(a, chunk_size)))
  return (_unchunk(du, u.shape[1]),)


_chunked_ranks.defvjp(_chunked_ranks_fwd, _chunked_ranks_bwd)


def smooth_ranks(scores: jax.Array, *, tau=0.01,
                 chunk_size: Optional[int] = None,
                 method: str = "chunked") -> jax.Array:
  """Smooth ranks [Q, N] of each row of `scores` [Q, N] in O(Q*N*chunk) memory.

  Same values as `dense_smooth_ranks`; the gradient (w.r.t. `scores` and
  `tau`) comes from a custom VJP. `method="chunked"` recomputes chunk by
  chunk in O(Q * N^2) time; `chunk_size` (default `DEFAULT_CHUNK_SIZE`,
  capped at N) need not divide N. `method="sorted"` takes O(Q * N * (log N +
  M)) time and O(Q * N) memory (`sorted_ranks`; ignores `chunk_size`);
  "auto" picks one by N (`resolve_rank_method`).

  >>> import numpy as np
  >>> r = smooth_ranks(jnp.array([[0.9, 0.1, 0.5]]), tau=0.01, chunk_size=2)
  >>> np.round(np.asarray(r), 3).tolist()
  [[1.0, 3.0, 2.0]]
  >>> r = smooth_ranks(jnp.array([[0.9, 0.1, 0.5]]), tau=0.01, method="sorted")
  >>> np.round(np.asarray(r), 3).tolist()
  [[1.0, 3.0, 2.0]]
  """
  _validation.check_rank("scores", scores, 2)
  _validation.check_positive("tau", tau)
  _validation.check_chunk_size(chunk_size)
  s = jnp.asarray(scores, _working_dtype(scores))
  if resolve_rank_method(method, s.shape[1]) == "sorted":
    return sorted_ranks.sorted_smooth_ranks(s / tau)
  chunk_size = min(chunk_size or DEFAULT_CHUNK_SIZE, s.shape[1])
  return _chunked_ranks(s / tau, chunk_size)


def hard_ranks(values: jax.Array) -> jax.Array:
  """r_qj = 1 + #{k : v_qk > v_qj} for each row of `values` [Q, N]; no gradient.

  O(N log N) per row (sort + binary search) rather than O(N^2) comparisons,
  both on integer images of the values (`sorted_ranks.order_key`, ~3x faster
  on CPU than on floats).

  >>> hard_ranks(jnp.array([[0.2, 0.9, 0.2, 0.5]])).tolist()
  [[3.0, 1.0, 3.0, 2.0]]
  """
  _validation.check_rank("values", values, 2)
  v = jax.lax.stop_gradient(jnp.asarray(values, _working_dtype(values)))
  n = v.shape[-1]
  keys = sorted_ranks.order_key(v)
  ascending = jax.lax.sort(keys, dimension=v.ndim - 1)
  # Number of entries <= v_qj, hence N minus it is the number > v_qj.
  at_most = jax.vmap(functools.partial(jnp.searchsorted, side="right"))(ascending, keys)
  return (1 + n - at_most).astype(v.dtype)
