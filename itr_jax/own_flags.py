"""Flags of a command in a library module, parsed apart from absl's global ones."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from absl import flags

# absl prints usage for these and exits with status 1; asking for help is
# not an error, so the commands exit 0.
HELP_ARGS = ("--help", "-help", "-?", "--helpshort", "--helpfull")


def parse_own_flags(argv: Optional[Sequence[str]],
                    define: Callable[[flags.FlagValues], None], *,
                    usage: str) -> flags.FlagValues:
  """Parses `argv` (default: sys.argv[1:]) into flags of the command's own.

  For commands in library modules that train/evaluate import (data
  generators, embedding tools): their flags must not join the global absl
  namespace those commands share (a second `--split` would clash). Same
  syntax as every other command (`--name=value`, `--name value`, `--[no]name`);
  `--help` prints `usage` and the flags and exits 0; an unknown, malformed or
  missing required flag exits 1 naming it.

  >>> def define(fv):
  ...   flags.DEFINE_integer("dim", 8, "Dimension.", flag_values=fv)
  >>> parse_own_flags(["--dim=3"], define, usage="demo").dim
  3
  """
  values = flags.FlagValues()
  define(values)
  argv = list(sys.argv[1:] if argv is None else argv)
  if any(arg in HELP_ARGS for arg in argv):
    listed = [line for line in values.get_help(include_special_flags=False).splitlines()
              if line.startswith(" ")]  # without absl's per-module headings
    print(usage.strip() + "\n\nFlags:\n" + "\n".join(listed))
    sys.exit(0)
  try:
    rest = values(["command"] + argv)
  except flags.Error as e:
    print(f"Error: {e}\n(--help lists the flags)", file=sys.stderr)
    sys.exit(1)
  if len(rest) > 1:
    print(f"Error: unexpected arguments {rest[1:]} (flags are --name=value; "
          "--help lists them)", file=sys.stderr)
    sys.exit(1)
  return values
