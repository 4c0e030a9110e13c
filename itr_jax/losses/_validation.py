"""Trace-time argument checks shared by the losses and the relevance function.

Hyperparameters may be tracers (e.g. when a loss is vmapped over a grid of
temperatures), so their values are only checked when they are concrete; shapes
are static and always checked.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np


def concrete_scalar(name: str, value: Any) -> float | None:
  """Returns `value` as a float if it is known at trace time, else None.

  Raises ValueError if `value` is not a scalar (a vector of hyperparameters
  must be mapped over with `jax.vmap`, not passed whole).
  """
  if np.ndim(value) != 0:
    raise ValueError(
        f"`{name}` must be a scalar, got shape {np.shape(value)}; to sweep "
        f"several values use jax.vmap over `{name}`.")
  if isinstance(value, jax.core.Tracer):
    return None
  return float(value)


def check_positive(name: str, value: Any) -> None:
  v = concrete_scalar(name, value)
  if v is not None and not v > 0:
    raise ValueError(f"`{name}` must be > 0, got {v}.")


def check_nonnegative(name: str, value: Any) -> None:
  v = concrete_scalar(name, value)
  if v is not None and not v >= 0:
    raise ValueError(f"`{name}` must be >= 0, got {v}.")


def check_unit_interval(name: str, value: Any) -> None:
  v = concrete_scalar(name, value)
  if v is not None and not 0.0 <= v <= 1.0:
    raise ValueError(f"`{name}` must lie in [0, 1], got {v}.")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(
        f"`{name}` must be one of {tuple(choices)}, got {value!r}.")


def check_chunk_size(chunk_size: Any) -> None:
  if chunk_size is None:
    return
  if (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
      or chunk_size < 1):
    raise ValueError(
        f"`chunk_size` must be a positive Python int or None, got {chunk_size!r}.")


def check_rank(name: str, x: Any, ndim: int) -> None:
  if np.ndim(x) != ndim:
    raise ValueError(
        f"`{name}` must have {ndim} dimensions, got shape {np.shape(x)}.")


def check_square(name: str, x: Any) -> None:
  check_rank(name, x, 2)
  rows, cols = np.shape(x)
  if rows != cols:
    raise ValueError(
        f"`{name}` must be square [B, B] (pair (i, i) is the positive), got "
        f"shape {np.shape(x)}.")
  if rows < 2:
    raise ValueError(f"`{name}` needs at least 2 pairs, got shape {np.shape(x)}.")


def check_same_shape(name: str, x: Any, ref_name: str, ref: Any) -> None:
  if np.shape(x) != np.shape(ref):
    raise ValueError(
        f"`{name}` must have the same shape as `{ref_name}` "
        f"{np.shape(ref)}, got {np.shape(x)}.")
