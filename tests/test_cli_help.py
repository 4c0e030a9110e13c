"""Every command answers --help with its description and its own flags, both
as an installed console script and as `python -m`, fast; flag and config
errors are one sentence.

A console script is `from <module> import <function>; <function>()` with
argv[0] the script's name (what pip's generated `itr-*` file runs), so it is
run exactly so; one subprocess per command and form, all started at once.
"""
import os
import subprocess
import sys
import time
import tomllib

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(REPO, "pyproject.toml"), "rb") as _f:
  SCRIPTS = tomllib.load(_f)["project"]["scripts"]

# One flag of each command's own (absl's --help listed none of them for
# console scripts) and a phrase of its description.
OWN = {
    "itr-train": ("--workdir", "Train an ITR model"),
    "itr-evaluate": ("--ensemble", "Evaluate a trained run"),
    "itr-sweep": ("--sweep_dir", "Run every member of a sweep"),
    "itr-report": ("--out_dir", "Report of a sweep"),
    "itr-examples": ("--num_queries", "retrieval examples"),
    "itr-embed-captions": ("--chunk_size", "Sentence embeddings"),
    "itr-retrieve": ("--query", "Retrieve with a trained run"),
    "itr-coco-ids": ("--karpathy_json", "coco_ids"),
    "itr-build-tfds": ("--local_cache_dir", "TFDS builder"),
    "itr-import-torch": ("--backbone", "Import an official PyTorch checkpoint"),
    "itr-import-dual-encoder": ("--tokenizer", "Import published CLIP / SigLIP weights"),
    "itr-image-records": ("--image_root", "python -m itr_jax.data.image_records"),
    "itr-karpathy": ("--out_dir", "Karpathy split JSON"),
}


def _commands():
  for script, target in sorted(SCRIPTS.items()):
    module, function = target.split(":")
    console = [sys.executable, "-X", "importtime", "-c",
               f"import sys; sys.argv[0] = {script!r}; "
               f"from {module} import {function}; {function}()"]
    yield script, "console", console
    yield script, "-m", [sys.executable, "-X", "importtime", "-m", module]


def _imported(stderr: str) -> set[str]:
  """Top-level packages a `python -X importtime` process imported."""
  return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
          if line.startswith("import time:") and "|" in line}


@pytest.fixture(scope="module")
def helps():
  """{(script, form): (returncode, stdout, stderr)} of `--help`."""
  env = {**os.environ, "PYTHONPATH": REPO}
  procs = {(script, form): subprocess.Popen(argv + ["--help"], cwd=REPO, env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True)
           for script, form, argv in _commands()}
  outputs = {key: p.communicate(timeout=300) for key, p in procs.items()}  # no full pipes
  return {key: (procs[key].returncode, *outputs[key]) for key in procs}


def test_every_command_help_shows_its_description_and_flags(helps):
  assert set(OWN) == set(SCRIPTS)
  for (script, form), (rc, out, err) in helps.items():
    flag, phrase = OWN[script]
    assert rc == 0, (script, form, err[-2000:])
    assert flag in out, (script, form, out[:2000])
    assert phrase in out, (script, form, out[:2000])
    assert "Traceback" not in err, (script, form, err[-2000:])
    # --help answers before JAX or TensorFlow (seconds of imports) is loaded.
    assert not _imported(err) & {"jax", "tensorflow", "torch"}, (script, form)


def _timed(*args):
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
  return proc, time.perf_counter() - t0


def test_help_of_a_named_config_and_flag_errors_are_fast_and_readable():
  """`--config=NAME --help` lists that config's values; a flag type error, a
  missing --workdir and an unknown config name are one sentence; none imports
  JAX (the import alone takes seconds)."""
  proc, _ = _timed("-m", "itr_jax.train", "--config=f30k_vse:triplet", "--help")
  assert proc.returncode == 0, proc.stderr
  assert "--config.loss.weight=0.0" in proc.stdout  # the triplet variant, not 0.5
  assert "--config.data.test_split='test'" in proc.stdout
  cases = [
      (["--config=synthetic_scenes", "--workdir=w", "--fresh=maybe"], "--fresh"),
      (["--config=synthetic_scenes"], "--workdir is required"),
      (["--config=f30k_vsee", "--workdir=w"], "Did you mean 'f30k_vse'?"),
      (["--config=synthetic_scenes", "--workdir=w", "stray"], "Unexpected arguments"),
  ]
  importer = "itr_jax.tools.import_torch_checkpoint"
  for module, args, fragment in [("itr_jax.train", *case) for case in cases] + [
      (importer, ["--vocab=v.json"], "--checkpoint, --backbone, --workdir are required.")]:
    proc, _ = _timed("-X", "importtime", "-m", module, *args)
    errors = [l for l in proc.stderr.splitlines() if l.startswith("Error: ")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert fragment in errors[0], errors[0]
    assert "FATAL" not in proc.stderr
    assert "| jax\n" not in proc.stderr and "| tensorflow\n" not in proc.stderr


def test_dry_run_prints_the_resolved_config_and_writes_nothing(tmp_path):
  import json  # pylint: disable=import-outside-toplevel
  proc, _ = _timed("-m", "itr_jax.train", "--config=synthetic_scenes", "--dry_run",
                   f"--workdir={tmp_path / 'run'}", "--config.loss.tau=0.3")
  assert proc.returncode == 0, proc.stderr
  assert json.loads(proc.stdout)["loss"]["tau"] == 0.3
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["itr_jax.cli", "itr_jax.evaluate", "itr_jax.own_flags"])
def test_docstring_examples(name):
  import doctest  # pylint: disable=import-outside-toplevel
  import importlib  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(importlib.import_module(name))
  assert result.attempted > 0 and result.failed == 0


def test_report_names_its_missing_extra_and_takes_workdir(tmp_path):
  """Without matplotlib (the [report] extra), itr-report says what to install."""
  block = ("import sys\n"
           "class Block:\n"
           "  def find_spec(self, name, path=None, target=None):\n"
           "    if name.split('.')[0] == 'matplotlib':\n"
           "      raise ImportError(name)\n"
           "sys.meta_path.insert(0, Block())\n"
           "import importlib.util\n"
           "importlib.util.find_spec = lambda name, *a: None if name == 'matplotlib' "
           "else _find(name, *a)\n")
  script = ("import importlib.util; _find = importlib.util.find_spec\n" + block +
            f"sys.argv = ['itr-report', '--workdir={tmp_path}']\n"
            "from itr_jax.report.__main__ import run; run()")
  proc, _ = _timed("-c", script)
  assert proc.returncode == 1, proc.stderr
  assert "Error: itr-report draws its plots with matplotlib" in proc.stderr
  assert "pip install 'itr_jax[report]'" in proc.stderr and "Traceback" not in proc.stderr


def test_sweep_set_typo_suggests_the_field():
  proc, _ = _timed("-m", "itr_jax.sweep", "--config=ablations/tau", "--sweep_dir=unused",
                   "--set=train.num_epoch=2", "--dry_run")
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert "did you mean train.num_epochs?" in proc.stderr, proc.stderr
