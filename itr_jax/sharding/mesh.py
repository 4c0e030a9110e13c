"""The device mesh of a run, from `config.mesh`, and how a batch is laid out on it.

`config.mesh` lists named axes with sizes, e.g. ``[("data", -1)]`` (pure data
parallelism over every device) or ``[("data", -1), ("model", 2)]``; one size
may be -1, meaning "all remaining devices". The batch is split over the axes
named in `BATCH_AXIS_NAMES` ("data", "fsdp") that the mesh has and replicated
over any other axis (e.g. "model", which parameter rules may use for tensor
parallelism). The mesh is built by `jax.make_mesh`, which orders devices by
the physical topology (TPU torus, GPU NVLink islands, processes).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# Mesh axes the batch (and the listwise loss's query rows) are split over.
BATCH_AXIS_NAMES = ("data", "fsdp")


def _check_axes(axes) -> tuple[tuple[str, int], ...]:
  try:
    axes = tuple((name, size) for name, size in axes)
  except (TypeError, ValueError):
    raise ValueError(
        f"config.mesh must be a list of (axis_name, size) pairs such as "
        f"[('data', -1)] or [('data', -1), ('model', 2)], got {axes!r}.") from None
  if not axes:
    raise ValueError("config.mesh is empty; use e.g. [('data', -1)].")
  names = [name for name, _ in axes]
  if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
    raise ValueError(f"config.mesh axis names must be distinct non-empty "
                     f"strings, got {names}.")
  if not any(name in BATCH_AXIS_NAMES for name in names):
    raise ValueError(f"config.mesh needs a batch axis named one of "
                     f"{BATCH_AXIS_NAMES} to split the batch over, got {names}.")
  sizes = [size for _, size in axes]
  if (not all(isinstance(s, (int, np.integer)) and (s == -1 or s >= 1) for s in sizes)
      or sizes.count(-1) > 1):
    raise ValueError(f"config.mesh sizes must be positive ints with at most "
                     f"one -1 (all remaining devices), got {sizes}.")
  return tuple((name, int(size)) for name, size in axes)


def mesh_shape(axes: Sequence[tuple[str, int]], num_devices: int) -> tuple[int, ...]:
  """Axis sizes with -1 resolved so that their product is `num_devices`.

  >>> mesh_shape([("data", -1), ("model", 2)], 8)
  (4, 2)
  """
  axes = _check_axes(axes)
  sizes = [size for _, size in axes]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh {list(axes)}: the fixed axis sizes "
                       f"(product {known}) must divide the {num_devices} devices.")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh {list(axes)} has {math.prod(sizes)} devices "
                     f"but {num_devices} are available; use -1 for one axis "
                     "to take all remaining devices.")
  return tuple(sizes)


def create_mesh(axes: Sequence[tuple[str, int]] = (("data", -1),), *,
                devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """The `Mesh` of `axes` [(name, size), ...] over `devices` (default: all).

  Axes are `Auto` (GSPMD propagates shardings through the model; the loss
  places its collectives itself with `shard_map`).

  >>> mesh = create_mesh([("data", -1)], devices=jax.devices()[:1])
  >>> dict(mesh.shape)
  {'data': 1}
  """
  axes = _check_axes(axes)
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(axes, len(devices))
  names = tuple(name for name, _ in axes)
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names),
                       devices=devices)


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """The mesh axes the batch is split over (see `BATCH_AXIS_NAMES`)."""
  axes = tuple(name for name in mesh.axis_names if name in BATCH_AXIS_NAMES)
  if not axes:
    raise ValueError(f"The mesh {dict(mesh.shape)} has no batch axis; name one "
                     f"of its axes {BATCH_AXIS_NAMES[0]!r}.")
  return axes


def num_batch_shards(mesh: Mesh) -> int:
  """How many pieces the batch is cut into: the product of the batch axes."""
  return math.prod(mesh.shape[name] for name in batch_axes(mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the batch axes, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
  """Raises ValueError unless the global batch splits evenly over the mesh."""
  shards = num_batch_shards(mesh)
  if global_batch_size % shards:
    raise ValueError(
        f"{what}={global_batch_size} must be a multiple of the {shards} batch "
        f"shards of the mesh {dict(mesh.shape)}; change the batch size or "
        "config.mesh.")


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """One global `jax.Array` per key from this process's rows of the batch.

  Each process passes the rows it read (`pipeline.train_batches` gives
  process p the rows [p*B/P, (p+1)*B/P) of the global batch B); the result is
  split over the mesh's batch axes. On one process this is `device_put`.
  """
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    check_batch_size(value.shape[0] * jax.process_count(), mesh,
                     what=f"the global batch size of {key!r}")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out
