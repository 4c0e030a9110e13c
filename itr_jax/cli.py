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

import importlib.util
import os
import sys
import traceback
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import flags

# parse_own_flags lives apart so that library modules (e.g.
# training.integrity) can offer a command without importing training.errors.
from itr_jax.own_flags import HELP_ARGS
from itr_jax.own_flags import flag_error_text
from itr_jax.own_flags import parse_own_flags  # pylint: disable=unused-import
from itr_jax.own_flags import required_text
from itr_jax.own_flags import verbose
# Shipped configs by name (also used by training.errors, which cli imports).
from itr_jax.shipped_configs import configs_dir  # pylint: disable=unused-import
from itr_jax.shipped_configs import resolve_config
from itr_jax.shipped_configs import shipped_config_hint  # pylint: disable=unused-import
from itr_jax.shipped_configs import shipped_configs  # pylint: disable=unused-import

# Flags every command has (defined by itr_jax.training.errors).
_SHARED_FLAG_MODULES = ("itr_jax.training.errors",)


def lazy_import(name: str):
  """Module `name`, executed on its first attribute access (stdlib LazyLoader).

  Its parent packages are imported now, so they must be light. This
  project's packages are refused: a submodule imported before the lazy
  package has run loads a second time and replaces the package's attribute
  of the same name (the function `itr_jax.metrics.ndcg` by the module).

  >>> json = lazy_import("json")
  >>> json.dumps([1])
  '[1]'
  """
  if name.startswith("itr_jax.") and os.path.isdir(
      os.path.join(os.path.dirname(__file__), *name.split(".")[1:])):
    raise ValueError(f"lazy_import({name!r}): {name} is a package; import it directly.")
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.find_spec(name)
  loader = importlib.util.LazyLoader(spec.loader)
  spec.loader = loader
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  loader.exec_module(module)
  return module


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


def flag_values(argv: Sequence[str], values: Mapping[str, Any],
                required: Sequence[str] = ()) -> dict[str, Any]:
  """{name: value} of the flag holders `values` (absl's DEFINE_* results);
  a UsageError naming every missing `required` flag, or stray arguments.

  For commands that define their flags in `run()` (their module is also a
  library) and so cannot use absl's `mark_flags_as_required`.

  >>> from types import SimpleNamespace as Flag
  >>> flag_values(["cmd"], {"workdir": Flag(value="w"), "k": Flag(value=3)})
  {'workdir': 'w', 'k': 3}
  >>> flag_values(["cmd"], {"workdir": Flag(value=None)}, required=["workdir"])
  Traceback (most recent call last):
  ...
  absl.app.UsageError: --workdir is required. (--help lists the flags)
  """
  from absl import app  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments {list(argv[1:])}: flags are "
                         "--name=value (--help lists them).")
  result = {name: flag.value for name, flag in values.items()}
  missing = [f"--{name}" for name in required if not result[name]]
  if missing:
    raise app.UsageError(required_text(missing))
  return result


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with this project's error style (no "FATAL")."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
    problem = errors.config_flag_problem(argv)
    if verbose(argv):
      traceback.print_exc()
    print(f"Error: {problem or flag_error_text(e)}", file=sys.stderr)
    sys.exit(1)


def quiet_logs(show: bool = False) -> None:
  """Log lines for developers (absl INFO: TFDS's dataset-info chatter, orbax,
  JAX's backend notes; TensorFlow's C++ INFO) reach stderr only when `show`
  (--verbose); warnings and errors always do."""
  from absl import logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.INFO if show else logging.WARNING)
  if not show:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # read when TF is imported


def command_main(main: Callable[[list[str]], None], *,
                 positional: bool = False) -> Callable[[list[str]], None]:
  """`main` as absl runs it: arguments that are not flags refused (unless
  `positional`), developer logs quiet unless --verbose (absl has parsed the
  flags by now: its --verbosity default would otherwise apply)."""
  from absl import app  # pylint: disable=import-outside-toplevel
  from itr_jax.training import errors  # pylint: disable=import-outside-toplevel

  def checked(argv):
    if not flags.FLAGS["verbosity"].present:  # absl's own flag, if given, wins
      quiet_logs(flags.FLAGS["verbose"].value)
    try:
      if not positional:
        flag_values(argv, {})
      return main(argv)
    except app.UsageError as e:
      # absl.app.run would print the whole --help before the message.
      raise errors.UsageProblem(str(e)) from e
  return checked


def run(main: Callable[[list[str]], None], *, config_fields: bool = False,
        doc: Optional[str] = None, positional: bool = False,
        define: Optional[Callable[[], None]] = None) -> None:
  """`absl.app.run(main)` with readable errors and quiet logs.

  --help prints the command's description and flags (and, with
  `config_fields`, the config's fields: those of --config=X when given) and
  exits 0; `--config=NAME` may name a shipped config; a flag error is one
  sentence and exit status 1; arguments that are not flags are refused
  unless `positional`. Developer logs show only with --verbose (`quiet_logs`).
  `define` defines flags that read the command line when defined (a
  ConfigDict flag's --config.<field> overrides), so their errors are one
  sentence too.
  """
  from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
  sys.argv = _with_resolved_config(sys.argv)
  args = sys.argv[1:]
  quiet_logs(verbose(sys.argv))
  if define:
    try:
      define()
    except Exception as e:  # pylint: disable=broad-except
      if verbose(sys.argv):
        traceback.print_exc()
      print(f"Error: {errors.config_flag_problem(sys.argv) or errors.message(e)}",
            file=sys.stderr)
      sys.exit(1)
  if any(arg in HELP_ARGS[:-1] for arg in args):
    try:
      print(command_help(main, doc))
      if config_fields:
        try:
          print(config_fields_help(_config_spec(sys.argv)))
        except BrokenPipeError:
          raise
        except Exception as e:  # pylint: disable=broad-except
          print(f"Error: {errors.config_flag_problem(sys.argv) or e}", file=sys.stderr)
          sys.exit(1)
      sys.stdout.flush()
    except BrokenPipeError:
      # The reader stopped early (`--help | head`): not an error. Point stdout
      # at /dev/null so the interpreter's final flush does not fail again.
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
  try:
    errors.run(command_main(main, positional=positional), flags_parser=_parse_flags)
  except SystemExit as e:
    if "--helpfull" in args and e.code == 1:
      sys.exit(0)
    raise
