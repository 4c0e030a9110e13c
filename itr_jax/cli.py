"""What every itr_jax command shares: absl flags, `--help`, config files by
name, fast start-up and readable errors (`itr_jax.training.errors`: one
sentence, no traceback unless --verbose).

  def run():
    cli.run(main, config_fields=True)

Start-up stays fast (`--help`, a flag typo or a bad config answer in well
under two seconds) because command modules import JAX, TensorFlow and the
models only when `main` runs: they import heavy modules with `lazy_import`
or inside functions.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys
import traceback
from typing import Callable, Optional, Sequence

from absl import flags

# parse_own_flags lives apart so that library modules (e.g.
# training.integrity) can offer a command without importing training.errors.
from itr_jax.own_flags import HELP_ARGS
from itr_jax.own_flags import parse_own_flags  # pylint: disable=unused-import

# Flags every command has (defined by itr_jax.training.errors).
_SHARED_FLAG_MODULES = ("itr_jax.training.errors",)


def lazy_import(name: str):
  """Module `name`, executed on its first attribute access (stdlib LazyLoader).

  Its parent packages are imported now, so they must be light.

  >>> json = lazy_import("json")
  >>> json.dumps([1])
  '[1]'
  """
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  loader = importlib.util.LazyLoader(spec.loader)
  spec.loader = loader
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  loader.exec_module(module)
  return module


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


def _config_spec(argv: Sequence[str]) -> Optional[str]:
  for arg in argv[1:]:
    if arg.startswith("--config="):
      return arg[len("--config="):]
  return None


def _with_resolved_config(argv: Sequence[str]) -> list[str]:
  return [("--config=" + resolve_config(a[len("--config="):])
           if a.startswith("--config=") else a) for a in argv]


def config_fields_help(spec: Optional[str] = None) -> str:
  """Config fields and their values, as `--config.<field>=` overrides: those
  of config `spec` (a file or shipped name) when given, else the defaults."""
  from itr_jax.training import defaults  # pylint: disable=import-outside-toplevel
  if spec:
    from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
    config = errors.load_config_file(resolve_config(spec))
    heading = f"Config fields of {spec} (override any with --config.<field>=<value>):"
  else:
    config = defaults.base_config()
    heading = ("Config fields (every shipped config starts from these; pass "
               "--config=NAME --help to see a config's values; override any "
               "with --config.<field>=<value>):")
  from itr_jax.training import workdir  # pylint: disable=import-outside-toplevel
  fields = workdir.flatten(config.to_dict())
  return "\n".join(["", heading] + [f"  --config.{name}={value!r}"
                                    for name, value in fields.items()])


def command_help(main: Callable, doc: Optional[str] = None) -> str:
  """The command's description (its module docstring) and its own flags.

  absl's `--help` lists the flags of the `__main__` module only, which an
  installed console script (`itr-train`) does not define; this finds them by
  the module that defines `main`.
  """
  module_name = main.__module__
  module = sys.modules.get(module_name)
  doc = doc or (module.__doc__ if module else "") or ""
  by_module = flags.FLAGS.flags_by_module_dict()
  keys = [module_name if module_name in by_module else sys.argv[0]]
  keys += [k for k in _SHARED_FLAG_MODULES if k in by_module]
  listed = []
  for key in keys:
    for flag in sorted(by_module.get(key, []), key=lambda f: f.name):
      text = flags.text_wrap(flag.help or "", indent="      ")
      default = "" if flag.default is None else f" (default: {flag.default_as_str})"
      listed.append(f"  --{flag.name}{default}\n{text}")
  return doc.strip() + "\n\nFlags:\n" + "\n".join(listed)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with this project's error style (no "FATAL")."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
    text = str(e).strip()
    required = re.search(r"Flag --(\w+) must (?:have a value other than None|be "
                         r"(?:specified|set))", text)
    if required:
      text = f"--{required.group(1)} is required"
    problem = errors.config_flag_problem(argv)
    if any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv):
      traceback.print_exc()
    print(f"Error: {problem}" if problem else
          f"Error: {text.rstrip('.')}. (--help lists the flags)", file=sys.stderr)
    sys.exit(1)


def run(main: Callable[[list[str]], None], *, config_fields: bool = False,
        doc: Optional[str] = None) -> None:
  """`absl.app.run(main)` with readable errors.

  --help prints the command's description and flags (and, with
  `config_fields`, the config's fields: those of --config=X when given) and
  exits 0; `--config=NAME` may name a shipped config; a flag error is one
  sentence and exit status 1.
  """
  from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
  sys.argv = _with_resolved_config(sys.argv)
  args = sys.argv[1:]
  if any(arg in HELP_ARGS[:-1] for arg in args):
    print(command_help(main, doc))
    if config_fields:
      try:
        print(config_fields_help(_config_spec(sys.argv)))
      except Exception as e:  # pylint: disable=broad-except
        print(f"Error: {errors.config_flag_problem(sys.argv) or e}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
  try:
    errors.run(main, flags_parser=_parse_flags)
  except SystemExit as e:
    if "--helpfull" in args and e.code == 1:
      sys.exit(0)
    raise
