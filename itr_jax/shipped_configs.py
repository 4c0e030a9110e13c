"""The configs shipped with itr_jax, by name: `--config=f30k_vse:sndcg`.

In a source checkout they are `configs/` beside the package; an installed
wheel carries them as `itr_jax.configs`.
"""
from __future__ import annotations

import difflib
import importlib.util
import os


def configs_dir() -> str:
  """The folder of the shipped configs: `itr_jax/configs` in an installed
  wheel, `configs/` beside the package in a source checkout."""
  spec = importlib.util.find_spec("itr_jax.configs")
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)[0]
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs")


def shipped_configs() -> list[str]:
  """Names of the shipped configs, e.g. 'f30k_vse', 'ablations/backbones'."""
  root = configs_dir()
  names = []
  for folder, _, files in os.walk(root):
    for file in files:
      if file.endswith(".py") and not file.startswith("_"):
        rel = os.path.relpath(os.path.join(folder, file), root)
        names.append(rel[:-3].replace(os.sep, "/"))
  return sorted(names)


def resolve_config(spec: str) -> str:
  """`--config` value with a shipped config's name replaced by its file.

  A path that exists is kept; `NAME[:variant]` (e.g. `f30k_vse:sndcg`,
  `ablations/backbones`, with or without `configs/` and `.py`) is looked up
  among the shipped configs. Anything else is returned as it is (its error
  names the file).

  >>> resolve_config("f30k_vse:sndcg").endswith("configs/f30k_vse.py:sndcg")
  True
  >>> resolve_config("no/such.py")
  'no/such.py'
  """
  path, colon, variant = spec.partition(":")
  if os.path.isfile(path):
    return spec
  name = path[len("configs/"):] if path.startswith("configs/") else path
  name = name[:-3] if name.endswith(".py") else name
  candidate = os.path.join(configs_dir(), *name.split("/")) + ".py"
  if name and os.path.isfile(candidate):
    return candidate + colon + variant
  return spec


def shipped_config_hint(path: str) -> str:
  """The shipped config closest to `path` (a name or file that does not
  exist) and the list of shipped configs, as a sentence."""
  names = shipped_configs()
  name = path[len("configs/"):] if path.startswith("configs/") else path
  close = difflib.get_close_matches(name.removesuffix(".py"), names, n=1, cutoff=0.6)
  return ((f"Did you mean {close[0]!r}? " if close else "")
          + f"Shipped configs: {', '.join(n for n in names if '/' not in n)} "
          "(and ablations/<name>); or pass the path of a config file.")
