"""RSC relevance (Li et al., 2023): caption-caption similarity as graded relevance.

Each image i comes with the embeddings of its C reference captions
E_img[i, c] and each caption j with its own embedding E_cap[j] (from a frozen
text encoder). Caption j's relevance to image i is its best cosine similarity
to one of the image's captions, mapped to [0, 1]; the paired caption is fully
relevant:

  cos_ij = max_c cos(E_img[i, c], E_cap[j])
  R_ij   = (1 + cos_ij) / 2   for i != j,      R_ii = 1.

By default (`snap=True`) values are snapped to a 2^-20 grid so that equal
grades stay exactly equal whatever the matmul shape (one device or eight): the
official "tied" IDCG ranks equal grades jointly and would jump if rounding
split such a tie. `snap=False` keeps the raw float32 values, as the official
code does (where a caption's similarity to itself may come out 0.99999994,
splitting its tie with the positive's 1); then 1- and 8-device runs can differ
at such ties.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from itr_jax.losses import _validation

# Floor on the norm so an all-zero embedding gives cos = 0 instead of NaN.
_EPS = 1e-12
_GRID = 2.0**20


def _l2_normalize(x: jax.Array) -> jax.Array:
  sq_norm = jnp.sum(x * x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq_norm, _EPS * _EPS))


def _check_snap(snap) -> None:
  if not isinstance(snap, bool):
    raise ValueError(f"`snap` must be True or False, got {snap!r}.")


def rsc_matrix(image_caption_emb: jax.Array, caption_emb: jax.Array, *,
               snap: bool = True) -> jax.Array:
  """Rectangular RSC relevance (1 + max_c cos(E_img[i, c], E_cap[j])) / 2, [N, M].

  For evaluation over a whole split, where caption j's own image is not
  singled out by position: with the 5:1 layout a caption's own image already
  scores 1 because the caption is one of that image's captions.

  Args:
    image_caption_emb: [N, C, D] embeddings of each image's C captions.
    caption_emb: [M, D] caption embeddings.
    snap: round to a 2^-20 grid (see the module docstring); False gives the
      raw float32 values, as the official code.

  >>> rsc_matrix(jnp.array([[[1.0, 0.0]]]), jnp.array([[0.0, 1.0], [2.0, 0.0]])).tolist()
  [[0.5, 1.0]]
  """
  _validation.check_rank("image_caption_emb", image_caption_emb, 3)
  _validation.check_rank("caption_emb", caption_emb, 2)
  _check_snap(snap)
  if caption_emb.shape[-1] != image_caption_emb.shape[-1]:
    raise ValueError(
        f"`caption_emb` [M, D] and `image_caption_emb` [N, C, D] must share D; "
        f"got {caption_emb.shape} and {image_caption_emb.shape}.")
  dtype = jnp.promote_types(
      jnp.result_type(image_caption_emb, caption_emb), jnp.float32)
  img = _l2_normalize(jnp.asarray(image_caption_emb, dtype))
  cap = _l2_normalize(jnp.asarray(caption_emb, dtype))
  cos = jnp.max(jnp.einsum("icd,jd->ijc", img, cap,
                           precision=jax.lax.Precision.HIGHEST), axis=-1)
  relevance = (1.0 + cos) / 2.0
  # Snap to a 2^-20 (~1e-6) grid: the "tied" IDCG ranks equal grades jointly,
  # so it jumps when float rounding (which differs between matmul shapes,
  # e.g. on 1 vs 8 devices) splits a tie such as a caption's similarity to
  # itself (1 vs 0.99999994). Far below any meaningful relevance difference.
  if snap:
    relevance = jnp.round(relevance * _GRID) / _GRID
  return jax.lax.stop_gradient(relevance)


def rsc(image_caption_emb: jax.Array, caption_emb: jax.Array, *,
        snap: bool = True) -> jax.Array:
  """RSC relevance R [B, B] (image i, caption j), in [0, 1], without gradient.

  Args:
    image_caption_emb: [B, C, D] embeddings of each image's C captions.
    caption_emb: [B, D] embedding of each batch caption (caption i pairs with
      image i). Neither needs to be normalised.
    snap: as in `rsc_matrix`.

  >>> img_caps = jnp.array([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]])
  >>> caps = jnp.array([[3.0, 0.0], [-1.0, 0.0]])
  >>> rsc(img_caps, caps).tolist()  # R_01 = (1 + max(-1, 0)) / 2
  [[1.0, 0.5], [0.8535537719726562, 1.0]]
  """
  _validation.check_rank("image_caption_emb", image_caption_emb, 3)
  _validation.check_rank("caption_emb", caption_emb, 2)
  b, _, d = image_caption_emb.shape
  if caption_emb.shape != (b, d):
    raise ValueError(
        f"`caption_emb` must be [B, D] = {(b, d)} to match `image_caption_emb` "
        f"[B, C, D] = {image_caption_emb.shape}, got {caption_emb.shape}.")
  return with_positives(rsc_matrix(image_caption_emb, caption_emb, snap=snap))


def with_positives(relevance_rows: jax.Array, offset=0) -> jax.Array:
  """`relevance_rows` [Q, B] with R[r, offset + r] = 1: query row r is pair
  offset + r of the batch (a device's rows of a sharded batch start at its
  offset).

  >>> with_positives(jnp.zeros((1, 3)), offset=1).tolist()
  [[0.0, 1.0, 0.0]]
  """
  rows, cols = relevance_rows.shape
  is_pair = jnp.arange(cols)[None, :] == offset + jnp.arange(rows)[:, None]
  return jnp.where(is_pair, jnp.ones((), relevance_rows.dtype), relevance_rows)
