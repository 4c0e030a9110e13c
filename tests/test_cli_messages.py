"""What a command shows a person: no developer log lines unless --verbose,
paths as paths (never a `PosixGPath(...)` repr). In-process and cheap."""
import logging as std_logging

from absl import flags
from absl import logging
import pytest

from itr_jax import cli
from itr_jax import filesystem as fs
from itr_jax.training import errors


@pytest.fixture
def verbose_flag():
  """--verbose, with absl's log handler on the root logger as `app.run` puts
  it; the flag, verbosity and handlers are restored after the test."""
  flag = flags.FLAGS["verbose"]
  before = (flag.value, logging.get_verbosity(), list(std_logging.root.handlers))
  logging.use_absl_handler()
  yield flag
  flag.value = before[0]
  std_logging.root.handlers[:] = before[2]
  logging.set_verbosity(before[1])


def test_command_logs_info_lines_only_with_verbose(verbose_flag, capfd):
  """A command's main runs with absl INFO (TFDS's dataset-info lines, orbax)
  hidden and warnings shown; --verbose shows both."""
  def main(argv):
    del argv
    logging.info("INFO for developers")
    std_logging.getLogger("tensorflow_datasets").info("TFDS INFO for developers")
    logging.warning("WARNING for users")

  logging.set_verbosity(logging.INFO)  # what a library may have set
  for shown in (False, True):
    verbose_flag.value = shown
    cli.command_main(main)(["itr-x"])
    err = capfd.readouterr().err
    assert "WARNING for users" in err
    assert ("INFO for developers" in err) == shown, err
    assert ("TFDS INFO for developers" in err) == shown, err


def test_command_refuses_stray_arguments():
  with pytest.raises(Exception, match=r"Unexpected arguments \['oops'\]: flags are --name"):
    cli.command_main(lambda argv: None)(["itr-x", "oops"])
  cli.command_main(lambda argv: None, positional=True)(["itr-x", "a_folder"])


def test_path_reprs_become_paths():
  assert fs.plain_paths("in PosixGPath('/a/b') and PosixPath(\"/c\")") == "in '/a/b' and \"/c\""
  orbax_like = FileNotFoundError(f"No step found in {[_GPath('/runs/x/checkpoints')]}")
  assert errors.message(orbax_like) == "No step found in ['/runs/x/checkpoints']"


class _GPath:
  """Stands for etils' PosixGPath: str() is the path, repr() is not."""

  def __init__(self, path):
    self.path = path

  def __str__(self):
    return self.path

  def __repr__(self):
    return f"PosixGPath({self.path!r})"


def test_tfds_dataset_not_prepared_names_the_folder_as_a_path(tmp_path):
  """This message printed `PosixGPath('...')` (TFDS's data_dir is an epath)."""
  pytest.importorskip("tensorflow_datasets")
  from itr_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError) as e:
    tfds_source._builder("itr_precomputed", str(tmp_path))  # pylint: disable=protected-access
  assert "GPath" not in str(e.value) and repr(str(tmp_path)) in str(e.value), str(e.value)


def test_help_into_a_pipe_closed_early_is_not_an_error():
  """`itr-train --help | head -1`: the first line, no BrokenPipeError."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  proc = subprocess.run(
      ["bash", "-c", f"set -o pipefail; '{sys.executable}' -m itr_jax.train --help | head -c 20"],
      capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0 and proc.stdout, proc.stderr
  assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
