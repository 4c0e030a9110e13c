"""Where each parameter and optimizer-state leaf lives: declared sharding rules.

A rule is `(regex, spec)`; a leaf's path ("params/image_encoder/fc/kernel",
"opt_state/1/0/mu/image_encoder/fc/kernel", ...) takes the spec of the first
rule whose regex it contains (`re.search`); unmatched leaves are replicated.
Because the Adam moments mirror the parameter tree, a rule written for a
parameter path also places its moments. A spec is one of

* ``"replicated"``: a full copy on every device (data parallelism);
* ``"fsdp"``: FSDP / ZeRO-3 style: the leaf's largest dimension that the
  FSDP axes divide is split over them, if the leaf has at least
  `fsdp_min_size` elements (small leaves stay replicated); XLA all-gathers
  the weights where the step uses them and reduce-scatters the gradients;
* a tuple with one entry per dimension: a mesh axis name, a tuple of names,
  or None (e.g. ``(None, "model")`` for tensor parallelism over "model").

`config.sharding` holds `rules` (default: none, all replicated),
`fsdp_axes` (default ("data",)) and `fsdp_min_size`; `FSDP_RULES` shards
every large leaf.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Shard every leaf with at least `fsdp_min_size` elements.
FSDP_RULES = ((".*", "fsdp"),)
DEFAULT_FSDP_MIN_SIZE = 2**16


def path_name(path) -> str:
  """"a/b/0/c" for a `jax.tree_util` key path."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def fsdp_spec(shape: Sequence[int], mesh: Mesh, *, fsdp_axes=("data",),
              min_size: int = DEFAULT_FSDP_MIN_SIZE) -> PartitionSpec:
  """Splits the largest dimension divisible by the FSDP axes' size over them.

  >>> mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  >>> fsdp_spec((300, 1024), mesh, min_size=1)
  P(None, 'data')
  """
  fsdp_axes = tuple(fsdp_axes)
  missing = [a for a in fsdp_axes if a not in mesh.shape]
  if missing:
    raise ValueError(f"config.sharding.fsdp_axes {fsdp_axes} names axes "
                     f"{missing} that the mesh {dict(mesh.shape)} lacks.")
  size = int(np.prod([mesh.shape[a] for a in fsdp_axes]))
  if int(np.prod(shape)) < min_size or not shape:
    return PartitionSpec()
  # Largest dimension first; ties go to the later (output) dimension.
  for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], -d)):
    if shape[dim] % size == 0:
      spec = [None] * len(shape)
      spec[dim] = fsdp_axes if len(fsdp_axes) > 1 else fsdp_axes[0]
      return PartitionSpec(*spec)
  return PartitionSpec()


def _check_rules(rules) -> tuple:
  try:
    rules = tuple((pattern, spec) for pattern, spec in rules)
  except (TypeError, ValueError):
    raise ValueError(f"config.sharding.rules must be a list of (regex, spec) "
                     f"pairs, e.g. [('.*', 'fsdp')], got {rules!r}.") from None
  for pattern, spec in rules:
    try:
      re.compile(pattern)
    except (re.error, TypeError) as e:
      raise ValueError(f"config.sharding.rules: bad regex {pattern!r}: {e}") from None
    if isinstance(spec, str) and spec not in ("replicated", "fsdp"):
      raise ValueError(f"config.sharding.rules: spec {spec!r} for {pattern!r} "
                       "must be 'replicated', 'fsdp' or a tuple of axis names.")
  return rules


def leaf_spec(name: str, shape: Sequence[int], mesh: Mesh, rules, *,
              fsdp_axes=("data",), min_size: int = DEFAULT_FSDP_MIN_SIZE) -> PartitionSpec:
  """The PartitionSpec of the leaf at path `name` (first matching rule)."""
  for pattern, spec in _check_rules(rules):
    if re.search(pattern, name):
      break
  else:
    return PartitionSpec()
  if spec == "replicated":
    return PartitionSpec()
  if spec == "fsdp":
    return fsdp_spec(shape, mesh, fsdp_axes=fsdp_axes, min_size=min_size)
  spec = tuple(tuple(s) if isinstance(s, list) else s for s in spec)
  if len(spec) != len(shape):
    raise ValueError(f"config.sharding.rules: spec {spec} for {name} needs one "
                     f"entry per dimension of its shape {tuple(shape)}.")
  for dim, axes in zip(shape, spec):
    names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
    unknown = [a for a in names if a not in mesh.shape]
    if unknown:
      raise ValueError(f"config.sharding.rules: {name} uses axes {unknown} "
                       f"that the mesh {dict(mesh.shape)} lacks.")
    if dim % int(np.prod([mesh.shape[a] for a in names])):
      raise ValueError(f"config.sharding.rules: {name} dimension {dim} is not "
                       f"divisible by the size of mesh axes {names}.")
  return PartitionSpec(*spec)


def tree_shardings(tree: Any, mesh: Mesh, rules=(), *, fsdp_axes=("data",),
                   min_size: int = DEFAULT_FSDP_MIN_SIZE) -> Any:
  """A `NamedSharding` for every array leaf of `tree` (arrays or ShapeDtypeStructs).

  >>> mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  >>> tree = {"fc": {"kernel": jax.ShapeDtypeStruct((8, 4), "float32")}}
  >>> tree_shardings(tree, mesh, [("kernel", "fsdp")], min_size=1)["fc"]["kernel"].spec
  P('data', None)
  """
  def one(path, leaf):
    spec = leaf_spec(path_name(path), np.shape(leaf), mesh, rules,
                     fsdp_axes=fsdp_axes, min_size=min_size)
    return NamedSharding(mesh, spec)

  return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(abstract_state: Any, mesh: Mesh, sharding_config=None) -> Any:
  """Shardings of a train state from `config.sharding` (None: all replicated)."""
  if sharding_config is None:
    return tree_shardings(abstract_state, mesh)
  return tree_shardings(
      abstract_state, mesh, sharding_config.rules,
      fsdp_axes=tuple(sharding_config.fsdp_axes),
      min_size=sharding_config.fsdp_min_size)


def with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs that carry `shardings` (for orbax restores, AOT lowering)."""
  return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                  sharding=sharding),
      abstract_tree, shardings)
