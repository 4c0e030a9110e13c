"""Flags of a command in a library module, parsed apart from absl's global ones."""
from __future__ import annotations

import re
import sys
from typing import Callable, Optional, Sequence

from absl import flags

def flag_error_text(error: Exception) -> str:
  r"""absl's flag error as one sentence ending with where the flags are listed:
  every missing required flag named at once, a "did you mean" tidied.

  >>> flag_error_text(flags.Error("Unknown command line flag 'wrkdir'. Did you mean: workdir ?"))
  "Unknown command line flag 'wrkdir'; did you mean --workdir? (--help lists the flags)"
  >>> flag_error_text(flags.Error("flag --a=None: Flag --a must have a value other than None."
  ...                             "\nflag --b=None: Flag --b must have a value other than None."))
  '--a, --b are required. (--help lists the flags)'
  """
  text = str(error).strip()
  required = list(dict.fromkeys(re.findall(
      r"Flag --(\w+) must (?:have a value other than None|be (?:specified|set))", text)))
  if required:
    return required_text([f"--{name}" for name in required])
  unknown = re.fullmatch(r"(Unknown command line flag '[\w-]+')\. Did you mean: ([\w-]+)[^?]*\?",
                         text)
  if unknown:
    return f"{unknown[1]}; did you mean --{unknown[2]}? (--help lists the flags)"
  return f"{text.rstrip('.')}. (--help lists the flags)"


def required_text(flag_names: Sequence[str]) -> str:
  """The sentence for missing required flags, e.g. "--workdir is required. ..."."""
  verb = "is" if len(flag_names) == 1 else "are"
  return f"{', '.join(flag_names)} {verb} required. (--help lists the flags)"


def verbose(argv: Sequence[str]) -> bool:
  """Whether `argv` asks for --verbose (before absl has parsed it)."""
  return any(a in ("--verbose", "--verbose=true", "--verbose=True") for a in argv[1:])


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
    print(f"Error: {flag_error_text(e)}", file=sys.stderr)
    sys.exit(1)
  if len(rest) > 1:
    print(f"Error: unexpected arguments {rest[1:]} (flags are --name=value; "
          "--help lists them)", file=sys.stderr)
    sys.exit(1)
  return values
