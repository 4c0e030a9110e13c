"""Reading a sweep out of a config file, and applying one member's overrides.

A sweep config file is an ordinary train config file (its `get_config()`
returns the base ConfigDict, so `python -m itr_jax.train --config=<it>` trains
the base) that also declares its members, either as

* ``get_sweep()`` returning a list of override dicts, or
* ``get_hyper(h)`` (big_vision style) where ``h`` is `itr_jax.sweeps.hyper`:

    def get_hyper(h):
      return h.product([h.sweep("loss.weight", [0.0, 0.5, 1.0]),
                        h.sweep("seed", [0, 1, 2])])

As with config_flags, ``path.py:arg`` passes ``arg`` to both functions.
Override keys are dotted config fields; every key must already exist in the
base config (a typo fails before anything runs).
"""
from __future__ import annotations

import ast
import difflib
import dataclasses
import importlib.util
import os
import uuid
from typing import Any, Mapping, Sequence

import ml_collections

from itr_jax.sweeps import hyper


@dataclasses.dataclass(frozen=True)
class SweepDeclaration:
  """A config file's base config and its list of member overrides."""
  config_path: str  # the file, without ":arg"
  config_arg: str | None
  base: ml_collections.ConfigDict
  members: list[dict[str, Any]]

  @property
  def config_flag(self) -> str:
    """The value to give `--config=` of `python -m itr_jax.train`."""
    return self.config_path + (f":{self.config_arg}" if self.config_arg else "")


def split_config_arg(config: str) -> tuple[str, str | None]:
  """'configs/x.py:variant' -> ('configs/x.py', 'variant')."""
  path, sep, arg = config.partition(".py:")
  if sep:
    return path + ".py", arg
  return config, None


def load_module(path: str):
  """Imports the Python file at `path` under a fresh module name."""
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist; pass a path such "
                     "as configs/ablations/loss_terms.py")
  name = f"itr_jax_sweep_config_{uuid.uuid4().hex[:8]}"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path` (how sweep files reuse a base)."""
  return _call(load_module(path).get_config, arg)


def _call(fn, arg):
  return fn(arg) if arg is not None else fn()


def load(config: str) -> SweepDeclaration:
  """Reads `get_config` and `get_sweep`/`get_hyper` of config file `config`."""
  path, arg = split_config_arg(config)
  module = load_module(path)
  if not hasattr(module, "get_config"):
    raise ValueError(f"{path!r} has no get_config(); a sweep file is a config "
                     "file that also defines get_sweep() or get_hyper(h)")
  base = _call(module.get_config, arg)
  if hasattr(module, "get_sweep"):
    members = _call(module.get_sweep, arg)
  elif hasattr(module, "get_hyper"):
    members = (module.get_hyper(hyper, arg) if arg is not None
               else module.get_hyper(hyper))
  else:
    raise ValueError(f"{path!r} declares no sweep: define get_sweep() returning "
                     "a list of override dicts, or get_hyper(h)")
  members = [normalize(m) for m in members]
  if not members:
    raise ValueError(f"the sweep of {path!r} has no members")
  for m in members:
    apply_overrides(base, m)  # validates every key and value up front
  return SweepDeclaration(path, arg, base, members)


def normalize(overrides: Mapping[str, Any]) -> dict[str, Any]:
  """Plain dict with big_vision's 'config.' prefixes dropped, keys sorted."""
  if not isinstance(overrides, Mapping):
    raise ValueError(f"each sweep member must be a dict of field -> value, got "
                     f"{overrides!r}")
  return {k[len("config."):] if k.startswith("config.") else k: v
          for k, v in sorted(overrides.items())}


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted `overrides` set; unknown fields raise.

  >>> c = ml_collections.ConfigDict({"loss": {"tau": 0.01}, "seed": 0})
  >>> apply_overrides(c, {"loss.tau": 0.1, "seed": 2}).loss.tau
  0.1
  """
  result = ml_collections.ConfigDict(config.to_dict())
  for key, value in normalize(overrides).items():
    *parents, leaf = key.split(".")
    node = result
    for i, part in enumerate(parents):
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ValueError(f"override {key!r}: the config has no section "
                         f"{'.'.join(parents[:i + 1])!r}")
      node = node[part]
    if leaf not in node:
      close = difflib.get_close_matches(leaf, list(node.keys()), n=1)
      section = ".".join(parents)
      raise ValueError(f"override {key!r}: the config has no field {leaf!r}"
                       + (f"; did you mean {section + '.' if section else ''}{close[0]}?"
                          if close else "")
                       + f" (config{'.' + section if section else ''} has: "
                       f"{', '.join(sorted(node.keys()))}).")
    try:
      node[leaf] = value
    except TypeError as e:
      raise ValueError(f"override {key!r}={value!r}: {e}") from e
  return result


def parse_assignments(assignments: Sequence[str]) -> dict[str, Any]:
  """['loss.tau=0.02', 'model.pooling=gpo'] -> {'loss.tau': 0.02, ...}.

  Values are Python literals where they parse as one, strings otherwise;
  keys come back sorted.

  >>> parse_assignments(["train.num_epochs=2", "model.pooling=gpo"])
  {'model.pooling': 'gpo', 'train.num_epochs': 2}
  """
  result = {}
  for item in assignments:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise ValueError(f"override {item!r} must look like field=value, e.g. "
                       "train.num_epochs=2")
    try:
      value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
      value = text
    result[key.strip()] = value
  return normalize(result)
