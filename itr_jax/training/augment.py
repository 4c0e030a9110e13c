r"""VSE-infinity's training-time "size augmentation", inside the jitted step.

Randomness is `jax.random.fold_in(key(seed), step)`: a pure function of the
seed and the optimizer step, so a resumed run draws exactly what an
uninterrupted one does. Both augmentations compact what they keep to the
front of the row (order kept) and pad after it, as the official datasets do
before collating.

* `drop_regions`: every region is kept with probability 1 − p (official:
  ``image[rand > 0.2]``).
* `augment_tokens`: each word is hit with probability p; a hit word is
  replaced by the mask token (50%), by uniformly random ids (10%), or
  deleted (40%) (official `process_caption`).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

Batch = dict


def _compact(values: jax.Array, keep: jax.Array, fill=0):
  """Kept entries of each row first (in order), `fill` after; and the counts.

  >>> v, n = _compact(jnp.array([[1, 2, 3]]), jnp.array([[False, True, True]]))
  >>> v.tolist(), n.tolist()
  ([[2, 3, 0]], [2])
  """
  order = jnp.argsort(~keep, axis=1, stable=True)
  index = order.reshape(order.shape + (1,) * (values.ndim - 2))
  moved = jnp.take_along_axis(values, index, axis=1)
  count = jnp.sum(keep, axis=1)
  valid = jnp.arange(values.shape[1])[None, :] < count[:, None]
  valid = valid.reshape(valid.shape + (1,) * (values.ndim - 2))
  return jnp.where(valid, moved, fill), count


def drop_regions(key, images: jax.Array, drop: float,
                 region_mask: Optional[jax.Array] = None):
  r"""Randomly drops regions: `(images [B, R, F], region_mask [B, R])`.

  Region r of image b is kept iff :math:`u_{br} > p` with u ~ U[0, 1), as
  the official ``image[np.where(rand_list > 0.20)]``. Kept regions move to
  the front, zeros after them. Deviation: an image that would lose every
  region (probability p^R) keeps all of them (the official code would pass
  GPO an empty image).

  >>> images = jnp.arange(1., 5.).reshape(1, 4, 1)
  >>> x, m = drop_regions(jax.random.key(0), images, 0.5)
  >>> int(m.sum()) == int((x[0, :, 0] > 0).sum())
  True
  """
  valid = (jnp.ones(images.shape[:2], bool) if region_mask is None
           else region_mask.astype(bool))
  keep = valid & (jax.random.uniform(key, images.shape[:2]) > drop)
  keep = jnp.where(jnp.any(keep, axis=1, keepdims=True), keep, valid)
  images, count = _compact(images, keep)
  return images, jnp.arange(images.shape[1])[None, :] < count[:, None]


def augment_tokens(key, tokens: jax.Array, lengths: jax.Array, *, prob: float,
                   mask_id: int, num_ids: int, keep_ends: bool = False,
                   continuation: Optional[jax.Array] = None):
  r"""Masks / replaces / deletes random words: `(tokens [B, L], lengths [B])`.

  Word w is hit iff :math:`u_w < p`; then with :math:`v = u_w / p`: v < 0.5
  → every token of w becomes `mask_id`; v < 0.6 → each becomes an id drawn
  uniformly from [0, `num_ids`); else w is deleted. Eligible tokens are the
  first `lengths` ones, minus the first and last when `keep_ends` (BERT's
  [CLS]/[SEP] are added after the official augmentation; the word-vocabulary
  branch augments <start>/<end> too). `continuation` [num_ids] bool marks
  WordPiece continuation ids ("##..."), which share their word's draw.
  Deviation: a caption that would lose every token keeps them all (the
  official code would fail on an empty caption).

  >>> t, n = augment_tokens(jax.random.key(0), jnp.array([[5, 6, 7]]),
  ...                       jnp.array([3]), prob=1e-9, mask_id=1, num_ids=9)
  >>> t.tolist(), n.tolist()   # p ~ 0: unchanged
  ([[5, 6, 7]], [3])
  """
  batch, length = tokens.shape
  u_key, id_key = jax.random.split(key)
  position = jnp.arange(length)[None, :]
  valid = position < lengths[:, None]
  eligible = valid
  if keep_ends:
    eligible = valid & (position > 0) & (position < lengths[:, None] - 1)
  u = jax.random.uniform(u_key, (batch, length))
  if continuation is not None:
    # Each token takes the draw of the token that starts its word.
    starts = ~continuation[tokens] | (position == 0)
    first = jax.lax.cummax(jnp.where(starts, position, 0), axis=1)
    u = jnp.take_along_axis(u, first, axis=1)
  hit = eligible & (u < prob)
  v = u / prob
  random_ids = jax.random.randint(id_key, (batch, length), 0, num_ids, tokens.dtype)
  tokens = jnp.where(hit & (v < 0.5), mask_id,
                     jnp.where(hit & (v >= 0.5) & (v < 0.6), random_ids, tokens))
  keep = valid & ~(hit & (v >= 0.6))
  keep = jnp.where(jnp.any(keep, axis=1, keepdims=True), keep, valid)
  tokens, count = _compact(tokens, keep)
  return tokens, count.astype(lengths.dtype)


AUGMENT_FIELDS = ("region_drop", "caption_tokens")


def check_config(augment: ml_collections.ConfigDict) -> None:
  """Raises ValueError for unknown fields or probabilities outside [0, 1)."""
  unknown = sorted(set(augment) - set(AUGMENT_FIELDS))
  if unknown:
    raise ValueError(f"Unknown config.train.augment field(s) {unknown}; known "
                     f"fields are {list(AUGMENT_FIELDS)}.")
  for name in AUGMENT_FIELDS:
    p = augment.get(name, 0.0)
    if not 0 <= p < 1:
      raise ValueError(f"config.train.augment.{name} must be a probability in "
                       f"[0, 1) (VSE-infinity: 0.2; 0: off), got {p!r}.")


def make_augment(augment: ml_collections.ConfigDict, *, seed: int,
                 mask_id: Optional[int] = None, num_ids: Optional[int] = None,
                 keep_ends: bool = False,
                 continuation: Optional[np.ndarray] = None
                 ) -> Optional[Callable[[Batch, jax.Array], Batch]]:
  """`augment(batch, step) -> batch` per `config.train.augment`, or None if off.

  The batch gains a `region_mask` when regions are dropped. `mask_id` /
  `num_ids` (and for WordPiece `keep_ends`, `continuation`) describe the
  caption ids; needed when `caption_tokens` > 0.
  """
  check_config(augment)
  region_drop = float(augment.get("region_drop", 0.0))
  token_prob = float(augment.get("caption_tokens", 0.0))
  if not region_drop and not token_prob:
    return None
  if token_prob and (mask_id is None or not num_ids):
    raise ValueError("caption augmentation needs the mask token id and the "
                     "number of ids")
  table = None if continuation is None else jnp.asarray(continuation, bool)

  def apply(batch: Batch, step: jax.Array) -> Batch:
    key = jax.random.fold_in(jax.random.key(seed), step)
    region_key, token_key = jax.random.split(key)
    batch = dict(batch)
    if region_drop:
      batch["images"], batch["region_mask"] = drop_regions(
          region_key, batch["images"], region_drop, batch.get("region_mask"))
    if token_prob:
      batch["tokens"], batch["lengths"] = augment_tokens(
          token_key, batch["tokens"], batch["lengths"], prob=token_prob,
          mask_id=mask_id, num_ids=num_ids, keep_ends=keep_ends,
          continuation=table)
    return batch

  return apply
