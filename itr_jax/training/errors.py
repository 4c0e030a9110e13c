"""Command-line errors a person can read: one or two sentences, exit status 1.

`run(main)` wraps `absl.app.run`. User and environment errors (a bad config
field or file, bad data, a locked, read-only or full workdir, a diverged run)
print `Error: <what is wrong and what to do>` and exit 1; the traceback is
shown only with `--verbose`. Anything else is a bug and keeps its traceback.

A misspelt `--config.<field>` or a missing config file fails inside absl's
flag parsing with chained tracebacks; `config_flag_problem(argv)` re-derives
what is wrong from the command line itself:

>>> import os
>>> demo = os.path.join(os.path.dirname(__file__), "..", "..", "configs",
...                     "synthetic_scenes.py")
>>> print(config_flag_problem(["train", f"--config={demo}",
...                            "--config.loss.taux=0.1"]))  # doctest: +ELLIPSIS
Unknown config field 'loss.taux' (in --config.loss.taux=0.1); did you mean 'loss.tau'? config.loss has: idcg, margin, ..., tau, weight.
"""
from __future__ import annotations

import difflib
import importlib.util
import inspect
import os
import sys
import traceback
from typing import Callable, Optional

from absl import app
from absl import flags

from itr_jax import filesystem as fs
from itr_jax import own_flags
from itr_jax import shipped_configs
from itr_jax.training import workdir

_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show the full traceback of an error, not only its message.")

class UsageProblem(ValueError):
  """A wrong command line (absl's UsageError, which `app.run` would answer
  with the whole --help before the message): one sentence, no traceback hint."""


# Raised for what the user or the environment got wrong (messages written
# for people); other exceptions are bugs.
USER_ERRORS = (ValueError, OSError, FloatingPointError, app.UsageError, MemoryError,
               workdir.WorkdirLockedError)


def _user_errors() -> tuple:
  # checkpointing imports JAX and orbax: looked up only if it was imported
  # (if not, its error cannot have been raised), so --help stays fast.
  checkpointing = sys.modules.get("itr_jax.training.checkpointing")
  return USER_ERRORS + ((checkpointing.CheckpointRestoreError,) if checkpointing else ())


def _is_data_loss(error: BaseException) -> bool:
  """TensorFlow's DataLossError: a damaged record (TFDS/Riegeli/ArrayRecord)."""
  tf = sys.modules.get("tensorflow")
  errors = getattr(tf, "errors", None)
  return errors is not None and isinstance(error, errors.DataLossError)


def _config_argument(argv) -> Optional[str]:
  for arg in argv[1:]:
    if arg.startswith("--config="):
      return arg[len("--config="):]
  return None


def load_config_file(spec: str):
  """The ConfigDict of `--config=PATH[:variant]`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"Config file {path!r} does not exist (working directory "
        f"{os.getcwd()!r}). " + shipped_configs.shipped_config_hint(path))
  module_spec = importlib.util.spec_from_file_location("itr_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if arg and not inspect.signature(module.get_config).parameters:
    raise ValueError(f"{path} has no variants (its get_config takes no argument); "
                     f"drop ':{arg}' from --config.")
  return module.get_config(arg) if arg else module.get_config()


def _fields(node, prefix="") -> list[str]:
  out = []
  for key in node.keys():
    value = node[key]
    if hasattr(value, "keys") and len(value.keys()):
      out.extend(_fields(value, f"{prefix}{key}."))
    else:
      out.append(f"{prefix}{key}")
  return out


def config_flag_problem(argv) -> Optional[str]:
  """One sentence on a missing/broken --config file or an unknown field; else None."""
  spec = _config_argument(argv)
  if spec is None:
    # A command whose --config is a ConfigDict of its own (itr-evaluate's
    # overrides): its fields are the default's.
    config = flags.FLAGS["config"].default if "config" in flags.FLAGS else None
    if "config" not in flags.FLAGS and any(a.startswith("--config.") for a in argv[1:]):
      from itr_jax.training import defaults  # pylint: disable=import-outside-toplevel
      config = defaults.base_config()  # the flag failed while being defined
    if not hasattr(config, "keys"):
      return None
  else:
    try:
      config = load_config_file(spec)
    except FileNotFoundError as e:
      return str(e)
    except ValueError as e:  # the file refuses its argument (an unknown variant)
      return f"Config file {spec.partition(':')[0]!r}: {e}"
    except Exception as e:  # pylint: disable=broad-except
      return (f"Config file {spec.partition(':')[0]!r} cannot be loaded: "
              f"{type(e).__name__}: {e}")
  known = _fields(config)
  for arg in argv[1:]:
    if not arg.startswith("--config.") or "=" not in arg:
      continue
    path = arg[len("--config."):].split("=", 1)[0]
    node, parts = config, path.split(".")
    for depth, part in enumerate(parts):
      if hasattr(node, "keys") and part in node.keys():
        node = node[part]
        continue
      parent = ".".join(parts[:depth])
      close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
      siblings = sorted(node.keys()) if hasattr(node, "keys") else []
      return (f"Unknown config field {path!r} (in {arg})"
              + (f"; did you mean {close[0]!r}?" if close else ".")
              + (f" config{'.' + parent if parent else ''} has: "
                 f"{', '.join(siblings)}." if siblings else ""))
  return None


def run(main: Callable, **app_run_kwargs) -> None:
  """`app.run(main, **app_run_kwargs)` with readable errors (see module doc)."""
  verbose = own_flags.verbose(sys.argv)
  try:
    app.run(main, **app_run_kwargs)
  except KeyboardInterrupt:
    print("Interrupted.", file=sys.stderr)
    sys.exit(130)
  except Exception as e:  # pylint: disable=broad-except
    problem = config_flag_problem(sys.argv)
    if problem is None and not isinstance(e, _user_errors()) and not _is_data_loss(e):
      raise
    if verbose:
      traceback.print_exc()
    print(f"Error: {problem or message(e)}", file=sys.stderr)
    if not verbose and not isinstance(e, (UsageProblem, app.UsageError)):
      print("(run with --verbose for the traceback)", file=sys.stderr)
    sys.exit(1)


def message(error: BaseException) -> str:
  """The readable part of `error`: its message, or errno text and file."""
  if isinstance(error, MemoryError):
    return ("Out of memory" + (f" ({str(error)[:200]})" if str(error) else "") +
            "; lower train.batch_size, eval.batch_size or data.max_len, or use a machine "
            "with more memory.")
  if _is_data_loss(error):
    detail = (getattr(error, "message", "") or str(error)).strip().splitlines()
    return (f"A data record is damaged ({detail[0][:200] if detail else 'DataLossError'}); "
            "regenerate or re-download the dataset's files.")
  if isinstance(error, OSError) and error.strerror and type(error) in (
      OSError, PermissionError, FileNotFoundError, IsADirectoryError,
      NotADirectoryError, FileExistsError):
    where = f" ({error.filename})" if error.filename else ""
    return f"{error.strerror}{where}."
  text = str(error).strip() or type(error).__name__
  return fs.plain_paths(text)

