"""Errors a person can read: the CLIs print one or two sentences and exit 1.

Real `python -m itr_jax.train` / `itr_jax.evaluate` processes. Read-only
workdirs are real read-only mounts (root ignores permission bits): a tmpfs
remounted read-only; skipped where mounting is not allowed.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from itr_jax import evaluate as evaluate_cli
from itr_jax.training import checkpointing
from itr_jax.training import integrity
from itr_jax.training import workdir as workdir_lib
from tiny_config import DEMO_CONFIG, cli_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, timeout=300):
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)
  return proc.returncode, proc.stderr


def _assert_readable(rc, stderr, *fragments):
  assert rc == 1, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  error = [line for line in stderr.splitlines() if line.startswith("Error: ")]
  assert len(error) == 1, stderr[-3000:]
  for fragment in fragments:
    assert fragment in error[0], error[0]


def test_unknown_field_names_the_path_and_a_suggestion(tmp_path):
  rc, err = _run("itr_jax.train", f"--workdir={tmp_path / 'run'}",
                 *cli_flags(str(tmp_path / "data")), "--config.loss.taux=0.1")
  _assert_readable(rc, err, "Unknown config field 'loss.taux'",
                   "did you mean 'loss.tau'?")
  assert not os.path.exists(tmp_path / "run")


def test_missing_config_file_and_verbose_traceback(tmp_path):
  rc, err = _run("itr_jax.train", f"--workdir={tmp_path / 'run'}",
                 "--config=configs/no_such_config.py", "--verbose")
  assert rc == 1 and "Traceback" in err  # --verbose keeps it
  assert "Error: Config file 'configs/no_such_config.py' does not exist" in err


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("x")
  rc, err = _run("itr_jax.train", f"--workdir={path}", f"--config={DEMO_CONFIG}",
                 f"--config.data.data_dir={tmp_path / 'data'}")
  _assert_readable(rc, err, "is a file, not a directory")
  assert path.read_text() == "x"


def test_hint_names_the_field_that_is_wrong(tmp_path):
  rc, err = _run("itr_jax.train", f"--workdir={tmp_path / 'run'}",
                 f"--config={DEMO_CONFIG}", "--config.loss.weight=1.5",
                 f"--config.data.data_dir={tmp_path / 'data'}")
  _assert_readable(rc, err, "`weight` must lie in [0, 1]", "--config.loss.weight=0.5")
  assert "loss.tau" not in err
  assert not os.path.exists(tmp_path / "run")


@pytest.fixture
def read_only_copy(tiny_run, tmp_path):
  """The tiny run's workdir on a read-only mount."""
  _, workdir, _, _ = tiny_run
  mnt = str(tmp_path / "ro")
  os.makedirs(mnt)
  if os.system(f"mount -t tmpfs -o size=64m tmpfs {mnt} 2>/dev/null") != 0:
    pytest.skip("needs root to mount a read-only file system")
  try:
    shutil.copytree(workdir, os.path.join(mnt, "run"))
    assert os.system(f"mount -o remount,ro {mnt}") == 0
    yield os.path.join(mnt, "run")
  finally:
    os.system(f"umount {mnt}")


def test_read_only_workdir(read_only_copy, tiny_run):
  """Training refuses at once; evaluation prints its results, then says
  they could not be saved."""
  _, _, _, data_dir = tiny_run
  rc, err = _run("itr_jax.train", f"--workdir={read_only_copy}", *cli_flags(data_dir))
  _assert_readable(rc, err, "is not writable", "choose a writable --workdir")
  proc = subprocess.run(
      [sys.executable, "-m", "itr_jax.evaluate", f"--workdir={read_only_copy}",
       "--split=dev", "--save_sims"], cwd=REPO, capture_output=True, text=True, timeout=300)
  _assert_readable(proc.returncode, proc.stderr, "could not be saved",
                   "Read-only file system", "not saved: ", "_sims.npy")
  assert "rsum" in proc.stdout and "[full]" in proc.stdout
  assert "written" not in proc.stdout  # nothing is announced that was not written


def test_evaluate_bad_checkpoint_flag_and_damaged_checkpoints(tiny_run, tmp_path):
  _, reference_dir, best, _ = tiny_run
  rc, err = _run("itr_jax.evaluate", f"--workdir={reference_dir}",
                 "--checkpoint=bset")
  _assert_readable(rc, err, "--checkpoint='bset' is not 'best', 'latest' or a step")
  # A flipped byte in the best checkpoint: 'best' falls back to the newest
  # intact one, an explicit request for it is refused; nothing is moved.
  workdir = str(tmp_path / "run")
  shutil.copytree(reference_dir, workdir)
  best_dir = os.path.join(workdir, "checkpoints", str(best["best_step"]))
  array = next(os.path.join(best_dir, rel) for rel in integrity.list_files(best_dir)
               if "/d/" in rel)
  data = bytearray(open(array, "rb").read())
  data[0] ^= 1
  open(array, "wb").write(bytes(data))
  fallback = max(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                 if s.isdigit() and int(s) != best["best_step"])
  with workdir_lib.WorkdirLock(workdir):  # evaluating while a trainer runs is fine
    report = evaluate_cli.evaluate_run(workdir, "dev", "best", write=False)
  assert report["checkpoint_step"] == fallback
  with pytest.raises(ValueError, match=rf"--checkpoint={best['best_step']}: that "
                     r"checkpoint is damaged \(file .* does not match its checksum\)"):
    evaluate_cli.evaluate_run(workdir, "dev", str(best["best_step"]), write=False)
  assert os.path.isdir(best_dir)
  assert not os.path.exists(os.path.join(workdir, checkpointing.CORRUPTED_DIR))
  with open(os.path.join(reference_dir, "config.json")) as f:
    assert json.load(f)  # the shared run is untouched


@pytest.mark.parametrize("module, flag", [
    ("itr_jax.data.synthetic_scenes", "--caption_encoder"),
    ("itr_jax.data.text_features", "--min_count"),
    ("itr_jax.tools.embed_captions", "--chunk_size"),
    ("itr_jax.data.karpathy", "--restval"),
    ("itr_jax.data.image_records", "--skip_corrupt"),
])
def test_library_module_commands_parse_absl_flags(module, flag, capsys):
  """Commands living in library modules use absl syntax with flags of their
  own (not the global namespace train/evaluate share)."""
  import importlib  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  main = importlib.import_module(module).main
  with pytest.raises(SystemExit) as exit_info:
    main(["--help"])
  assert exit_info.value.code == 0
  assert flag in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_info:
    main(["--regoins=3"])
  assert exit_info.value.code == 1
  assert "Unknown command line flag 'regoins'" in capsys.readouterr().err
  assert flag.lstrip("-") not in flags.FLAGS  # the global namespace is untouched


def test_a_hostile_checkpoint_import_is_one_sentence_and_writes_nothing(tmp_path):
  fixtures = os.path.join(REPO, "tests", "fixtures", "torch_checkpoints")
  raw = open(os.path.join(fixtures, "vse.pth.tar"), "rb").read()
  evil = tmp_path / "evil.pth.tar"
  evil.write_bytes(raw[:len(raw) // 2])  # a truncated download
  rc, err = _run("itr_jax.tools.import_torch_checkpoint", f"--checkpoint={evil}",
                 "--backbone=vse", f"--vocab={os.path.join(fixtures, 'vocab.json')}",
                 f"--workdir={tmp_path / 'run'}")
  _assert_readable(rc, err, f"cannot read checkpoint '{evil}'")
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error, fragments", [
    (MemoryError(), ("Out of memory", "lower train.batch_size")),
    ("data_loss", ("A data record is damaged", "corrupted record at 12")),
])
def test_memory_and_damaged_record_errors_are_one_sentence(error, fragments, monkeypatch, capsys):
  from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
  if error == "data_loss":
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    error = tf.errors.DataLossError(None, None, "corrupted record at 12")

  def main(argv):
    del argv
    raise error

  monkeypatch.setattr(sys, "argv", ["itr_jax.train"])
  monkeypatch.setattr(errors.app, "run", lambda main: main([]))  # no flag parsing
  with pytest.raises(SystemExit) as exit_info:
    errors.run(main)
  assert exit_info.value.code == 1
  _assert_readable(1, capsys.readouterr().err, *fragments)


def test_unknown_config_variant_is_one_sentence_with_the_choices():
  from itr_jax.training import errors  # pylint: disable=import-outside-toplevel
  path = os.path.join(REPO, "configs", "f30k_vse.py")
  problem = errors.config_flag_problem(["itr-train", f"--config={path}:nope"])
  assert problem == (f"Config file {path!r}: Unknown config variant 'nope'; choose one of "
                     "['sndcg', 'sndcg_only', 'triplet'], e.g. --config=f30k_vse:triplet")
