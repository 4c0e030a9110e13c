"""The package as users install it: light core, declared extras, console scripts.

The wheel is built from a copy of the sources (nothing written into the
checkout) and installed with --no-deps into a folder of its own; the core is
then imported from there with the training/evaluation libraries blocked, so
it provably needs only what `dependencies` declares (jax, numpy). A slow
variant installs the wheel with its declared dependencies from PyPI into a
fresh venv.
"""
import ast
import email.parser
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile

from packaging.requirements import Requirement
import pytest

import itr_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Libraries the core must not need: the [train], [eval], [report], [torch] ones.
HEAVY = ("tensorflow", "tensorflow_datasets", "flax", "optax", "orbax", "ml_collections",
         "clu", "tqdm", "absl", "tokenizers", "safetensors", "matplotlib",
         "eccv_caption", "pytrec_eval", "ir_measures", "torch")

# Imports the ranking core with HEAVY blocked and checks one loss value
# against a float64 NumPy triplet loss.
CORE_SCRIPT = textwrap.dedent(f"""
    import sys
    BLOCKED = {HEAVY!r}
    class Block:
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
          raise ImportError(f"core imported {{name}}")
    sys.meta_path.insert(0, Block())
    import numpy as np
    import itr_jax
    from itr_jax import losses, metrics, relevance
    print(itr_jax.__file__)
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, 4)).astype(np.float32)
    got = float(losses.triplet_loss(s, margin=0.2))
    s64 = s.astype(np.float64); d = np.diag(s64); off = ~np.eye(4, dtype=bool)
    rows = np.where(off, np.maximum(0.2 + s64 - d[:, None], 0), 0).max(1)
    cols = np.where(off, np.maximum(0.2 + s64 - d[None, :], 0), 0).max(0)
    want = (rows.mean() + cols.mean()) / 2
    assert abs(got - want) < 1e-5, (got, want)
    r = relevance.rsc(rng.normal(size=(4, 5, 8)), rng.normal(size=(4, 8)))
    assert r.shape == (4, 4)
    assert metrics.evaluate_retrieval(np.eye(3).repeat(5, axis=1))["rsum"] == 600.0
    print("core ok")
""")


# The CI lanes' pinned sets: Python 3.11 (oldest tested versions) and 3.12
# (newest); pyproject.toml's ranges of the core libraries span exactly these.
LANES = ("requirements.txt", "requirements-py312.txt")
CORE = ("jax", "numpy", "flax", "optax", "orbax-checkpoint", "ml-collections",
        "tensorflow-cpu", "tensorflow-datasets", "clu")


def _pinned(lane: str = LANES[0]) -> dict[str, str]:
  """{normalised name: version} of a lane's requirements and requirements-nodeps.txt."""
  pins = {}
  for name in (lane, "requirements-nodeps.txt", "requirements-docs.txt"):
    for line in (ROOT / name).read_text().splitlines():
      line = line.split("#")[0].strip()
      if line:
        req = Requirement(line)
        pins[_norm(req.name)] = str(next(iter(req.specifier)).version)
  return pins


def _norm(name: str) -> str:
  return name.lower().replace("_", "-")


def _declared() -> list[Requirement]:
  project = PYPROJECT["project"]
  declared = list(project["dependencies"])
  for extra, reqs in project["optional-dependencies"].items():
    assert extra in ("train", "eval", "report", "torch", "test", "docs"), extra
    declared += [r for r in reqs if not r.startswith("itr_jax[")]
  return [Requirement(line) for line in declared]


@pytest.mark.parametrize("lane", LANES)
def test_declared_ranges_admit_the_pinned_versions(lane):
  """Every declared range holds the version each lane pins (they resolve)."""
  pins = _pinned(lane)
  unpinned = []
  for req in _declared():
    version = pins.get(_norm(req.name))
    if version is None:
      unpinned.append(req.name)
      continue
    assert req.specifier.contains(version), (str(req), lane, version)
  # Only the PyTorch extra is not part of the pinned environment.
  assert sorted(unpinned) == ["torch"], unpinned
  assert {_norm(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]} == {
      "jax", "numpy"}
  assert set(_pinned(lane)) == set(_pinned(LANES[0])), "the lanes pin the same packages"


def test_core_ranges_are_the_tested_ones():
  """The core libraries' declared range is [3.11 lane's pin, 3.12 lane's pin]."""
  oldest, newest = _pinned(LANES[0]), _pinned(LANES[1])
  ranges = {_norm(r.name): {(s.operator, s.version) for s in r.specifier}
            for r in _declared() if _norm(r.name) in CORE}
  assert ranges == {name: {(">=", oldest[name]), ("<=", newest[name])} for name in CORE}


def test_console_scripts_point_at_functions():
  scripts = PYPROJECT["project"]["scripts"]
  assert set(scripts) == {"itr-train", "itr-evaluate", "itr-sweep", "itr-report",
                          "itr-embed-captions", "itr-retrieve", "itr-coco-ids",
                          "itr-examples", "itr-import-torch", "itr-build-tfds",
                          "itr-import-dual-encoder", "itr-image-records", "itr-karpathy"}
  for target in scripts.values():
    module, function = target.split(":")
    path = ROOT / (module.replace(".", "/") + ".py")
    functions = {n.name for n in ast.parse(path.read_text()).body
                 if isinstance(n, ast.FunctionDef)}
    assert function in functions, target


def test_core_imports_without_the_heavy_libraries():
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  out = subprocess.run([sys.executable, "-c", CORE_SCRIPT], env=env, cwd="/",
                       capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr
  assert "core ok" in out.stdout


def _build_wheel(tmp_path) -> pathlib.Path:
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "setup.py", "README.md"):
    shutil.copy(ROOT / name, src / name)
  for folder in ("itr_jax", "configs"):
    shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                 check=True, capture_output=True)
  (wheel,) = (tmp_path / "dist").glob("itr_jax-*.whl")
  return wheel


def test_wheel_metadata_and_core_import_from_it(tmp_path):
  wheel = _build_wheel(tmp_path)
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    info = next(n for n in names if n.endswith(".dist-info/METADATA"))
    meta = email.parser.Parser().parsestr(z.read(info).decode())
    entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
  assert "itr_jax/losses/smooth_ndcg.py" in names
  assert "itr_jax/training/trainer.py" in names
  # The shipped configs, found by name outside the repository.
  assert "itr_jax/configs/f30k_vse.py" in names
  assert "itr_jax/configs/ablations/backbones.py" in names
  assert meta["Requires-Python"] == ">=3.11"
  core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
  assert sorted(Requirement(r).name for r in core) == ["jax", "numpy"]
  assert set(meta.get_all("Provides-Extra")) == {"train", "eval", "report", "torch", "test",
                                                 "docs"}
  # One source for the version: itr_jax/__init__.py.
  assert meta["Version"] == itr_jax.__version__
  for script in PYPROJECT["project"]["scripts"]:
    assert f"{script} = " in entry_points

  site = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                  "--target", str(site), str(wheel)], check=True, capture_output=True)
  # Only the wheel's folder on the path (jax/numpy come from this environment).
  env = {**os.environ, "PYTHONPATH": str(site)}
  out = subprocess.run([sys.executable, "-c", CORE_SCRIPT], env=env, cwd="/",
                       capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines()[0].startswith(str(site)), out.stdout
  out = subprocess.run([sys.executable, "-c", "from itr_jax import cli; "
                        "print(cli.resolve_config('f30k_vse:triplet'))"],
                       env=env, cwd="/", capture_output=True, text=True, check=False)
  assert out.stdout.strip() == str(site / "itr_jax" / "configs" / "f30k_vse.py") + ":triplet", (
      out.stdout + out.stderr)
  assert (site / "bin" / "itr-evaluate").exists()


@pytest.mark.slow
def test_wheel_installs_into_a_clean_venv_from_pypi(tmp_path):
  """Needs network: pip resolves the core dependencies (jax, numpy) itself."""
  wheel = _build_wheel(tmp_path)
  venv = tmp_path / "venv"
  subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
  python = venv / "bin" / "python"
  subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True)
  out = subprocess.run([python, "-c", CORE_SCRIPT], cwd="/", capture_output=True,
                       text=True, check=False, env={"PATH": os.environ["PATH"]})
  assert out.returncode == 0, out.stderr
  assert "core ok" in out.stdout


def test_citation_and_changelog_name_the_version():
  """CITATION.cff and CHANGELOG.md follow itr_jax.__version__ (the single source)."""
  citation = (ROOT / "CITATION.cff").read_text()
  assert f"\nversion: {itr_jax.__version__}\n" in citation
  assert "arXiv:2305.16566" in citation
  changelog = (ROOT / "CHANGELOG.md").read_text()
  first = next(line for line in changelog.splitlines() if line.startswith("## "))
  assert first.startswith(f"## {itr_jax.__version__}"), first
