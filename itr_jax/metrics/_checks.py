"""Argument checks shared by the metric functions (private)."""
from __future__ import annotations

import numbers

import numpy as np

# Rows per chunk are chosen so a chunk holds about this many elements (1M):
# temporaries (masks, gathered values, sort keys) stay at a few MB, which is
# both bounded memory and markedly faster (cache) than big chunks.
CHUNK_ELEMENTS = 1 << 20


def as_score_matrix(x, name: str) -> np.ndarray:
  """Returns `x` as a host 2-D NumPy array of real numbers, or raises ValueError.

  JAX arrays are fetched to the host; the dtype is kept (comparisons are exact
  in any dtype, so there is no need to upcast a float32 matrix).
  """
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"`{name}` must be a 2-D matrix, got shape {x.shape}.")
  if x.dtype == bool or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
    raise ValueError(f"`{name}` must hold real numbers, got dtype {x.dtype}.")
  return x


def check_no_nan(x: np.ndarray, name: str) -> None:
  """Raises ValueError if `x` contains NaN (a NaN compares false with anything,
  so it would silently rank as neither above nor below the ground truth)."""
  if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
    raise ValueError(f"`{name}` contains NaN; fix the embeddings/similarities "
                     "before evaluating.")


def check_positive_int(value, name: str) -> int:
  """Returns `value` as an int if it is an integer >= 1, else raises ValueError."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
  return int(value)


def check_optional_k(k, name: str = "k"):
  """`None` (full ranking) or a positive integer."""
  return None if k is None else check_positive_int(k, name)


def rows_per_chunk(num_columns: int) -> int:
  """Number of rows of a [*, num_columns] matrix processed at once."""
  return max(1, CHUNK_ELEMENTS // max(1, num_columns))


def check_sims_layout(sims, captions_per_image) -> tuple[np.ndarray, int]:
  """Checks `sims` is [N_images, N_images * captions_per_image] (N_images >= 1)."""
  sims = as_score_matrix(sims, "sims")
  captions_per_image = check_positive_int(captions_per_image, "captions_per_image")
  num_images, num_captions = sims.shape
  if num_images == 0:
    raise ValueError("`sims` has no image rows; evaluate at least one image.")
  if num_captions != captions_per_image * num_images:
    raise ValueError(
        f"`sims` must have shape [N_images, N_images * captions_per_image] = "
        f"[{num_images}, {num_images * captions_per_image}] for captions_per_image="
        f"{captions_per_image}, got {sims.shape}; pass one row per image (not one "
        "per caption) and the right captions_per_image.")
  return sims, captions_per_image
