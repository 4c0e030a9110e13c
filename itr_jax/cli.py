"""What every itr_jax command shares: absl flags, `--help` exiting 0, config
fields, and readable errors (`itr_jax.training.errors`: one sentence, no
traceback unless --verbose).

  def run():
    cli.run(main, config_fields=True)
"""
from __future__ import annotations

import sys
from typing import Callable

# parse_own_flags lives apart so that library modules (e.g.
# training.integrity) can offer a command without importing training.errors.
from itr_jax.own_flags import HELP_ARGS
from itr_jax.own_flags import parse_own_flags  # pylint: disable=unused-import


def config_fields_help() -> str:
  """The base config's fields and defaults, as `--config.<field>=` overrides."""
  from itr_jax.training import defaults  # pylint: disable=import-outside-toplevel
  from itr_jax.training import workdir  # pylint: disable=import-outside-toplevel
  fields = workdir.flatten(defaults.base_config().to_dict())
  lines = ["", "Config fields (every configs/*.py starts from these; override any "
           "with --config.<field>=<value>; see the README's Configs table):"]
  lines += [f"  --config.{name}={value!r}" for name, value in fields.items()]
  return "\n".join(lines)


def run(main: Callable[[list[str]], None], *, config_fields: bool = False) -> None:
  """`absl.app.run(main)` with readable errors; --help exits 0 and, with
  `config_fields`, lists them."""
  from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
  wants_help = any(arg in HELP_ARGS for arg in sys.argv[1:])
  try:
    errors.run(main)
  except SystemExit as e:
    if wants_help and e.code == 1:
      if config_fields:
        print(config_fields_help())
      sys.exit(0)
    raise
