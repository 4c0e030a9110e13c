"""The documented shell commands run as written (on a fresh clone after setup.sh).

Every ```bash block of README.md and of the docs pages (docs/**/*.md) is split
into commands. After any leading `NAME=value` settings, each must start with
something that exists after `bash launch/setup.sh`: `bash launch/<script>.sh`
(checked with `bash -n`), `.venv/bin/<tool>` (never a bare
`python`/`tensorboard`, which is not on PATH), or a command the package
installs (`itr-train`, ... from pyproject's [project.scripts]: what a user of
the installed wheel types); `pip install ...` lines are install instructions
for the reader's own environment. For `.venv/bin/python -m MODULE ...` and an
installed command, the module's `--help` must exit 0 and name every flag the
command passes; `--config=FILE` (or a shipped config's name) must exist and every `--config.a.b=` must be a field of that config (of the
base config for commands without --config=, e.g. itr_jax.evaluate); files
under configs/ and launch/ that a command names must exist. Every link of the
README resolves: relative links to files that exist, and anchors to headings
of the linked page (the docs build itself fails on broken links in docs/).
"""
import concurrent.futures
import importlib.util
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The docs pages, without the build output and the generated API pages.
DOCS = sorted(p for p in (ROOT / "docs").rglob("*.md")
              if not {"_build", "api"} & set(p.relative_to(ROOT / "docs").parts))
PAGES = [README] + DOCS
VENV_BIN = pathlib.Path(sys.executable).parent
# Installed commands (`itr-train`) and the module each runs (`itr_jax.train`).
SCRIPTS = {name: target.split(":")[0] for name, target in tomllib.loads(
    (ROOT / "pyproject.toml").read_text())["project"]["scripts"].items()}


def readme_commands(text: str) -> list[str]:
  """Commands of the ```bash blocks: continuations joined, comments dropped,
  `for ...; do BODY; done` loops reduced to their body."""
  commands = []
  for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
    block = block.replace("\\\n", " ")
    for line in block.splitlines():
      line = line.split(" #")[0].strip()
      if not line or line.startswith("#") or line.startswith("for ") or line == "done":
        continue
      commands.append(line)
  return commands


COMMANDS = sorted({c for page in PAGES for c in readme_commands(page.read_text())})


def _words(command: str) -> list[str]:
  """The command's words after any leading `NAME=value` environment settings."""
  words = shlex.split(command)
  while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
    words = words[1:]
  return words


def _module(command: str) -> str | None:
  words = _words(command)
  if words[0] == ".venv/bin/python" and words[1] == "-m":
    return words[2]
  return SCRIPTS.get(words[0])


def _arguments(command: str) -> list[str]:
  """The words after the program (and after `-m MODULE`)."""
  words = _words(command)
  return words[3:] if words[0] == ".venv/bin/python" else words[1:]


def _config_file(config_arg: str) -> pathlib.Path:
  """The file of a `--config=` value: a path, or a shipped config's name."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  path = cli.resolve_config(config_arg).split(":")[0]
  return pathlib.Path(path) if os.path.isabs(path) else ROOT / path


def _help(module: str) -> str:
  out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
  assert out.returncode == 0, f"{module} --help exited {out.returncode}: {out.stderr[-2000:]}"
  return out.stdout + out.stderr


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
  """--help of every module the README runs, in parallel processes."""
  modules = sorted({m for m in map(_module, COMMANDS) if m})
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    return dict(zip(modules, pool.map(_help, modules)))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_commands_use_the_venv(page):
  """Commands quoted in the prose (`python benchmarks/...`) run as written too."""
  prose = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
  spans = re.findall(r"`((?:python|tensorboard)\s[^`]*)`", prose)
  assert not spans, f"use .venv/bin/...: {spans}"


def test_readme_has_commands():
  readme = readme_commands(README.read_text())
  assert "bash launch/demo.sh" in readme and "bash launch/test.sh" in readme
  assert any(_module(c) == "itr_jax.train" for c in COMMANDS)
  # The docs pages are read too (the guides hold most commands).
  assert len(COMMANDS) > len(readme)


def _slug(heading: str) -> str:
  """The anchor GitHub and MyST (myst_heading_anchors) give a heading."""
  text = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
  return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: pathlib.Path) -> set[str]:
  text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
  return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _links(text: str) -> list[str]:
  prose = re.sub(r"```.*?```", "", text, flags=re.S)
  prose = re.sub(r"`[^`\n]*`", "", prose)
  return re.findall(r"\]\(([^)\s]+)\)", prose)


def test_slug_matches_the_docs_anchors():
  assert _slug("The paper's numbers") == "the-papers-numbers"
  assert _slug("Workdirs and data on Cloud Storage (`gs://`)") == (
      "workdirs-and-data-on-cloud-storage-gs")


def test_readme_links_resolve():
  links = _links(README.read_text())
  assert any(link.startswith("docs/") for link in links)
  for link in links:
    if re.match(r"[a-z]+://", link):
      continue
    path, _, anchor = link.partition("#")
    target = (ROOT / path) if path else README
    assert target.exists(), f"README links to {path}, which does not exist"
    if anchor:
      assert target.suffix == ".md", link
      assert anchor in _anchors(target), f"README links to {link}: no such heading"


@pytest.mark.parametrize("command", COMMANDS)
def test_command_starts_with_an_installed_program(command):
  words = _words(command)
  if words[:2] == ["pip", "install"]:
    return  # an install instruction for the reader's own environment
  if words[0] == "bash":
    script = ROOT / words[1]
    assert script.exists(), f"{words[1]} does not exist"
    subprocess.run(["bash", "-n", str(script)], check=True)
    return
  if words[0] in SCRIPTS:
    return  # installed with the package; its flags are checked below
  assert words[0].startswith(".venv/bin/"), (
      f"{command!r} must call a program of the venv setup.sh makes, e.g. "
      ".venv/bin/python: bare commands are not on PATH")
  program = VENV_BIN / words[0].removeprefix(".venv/bin/")
  assert program.exists(), f"{program} is not installed by requirements.txt"


def _config_fields(config_arg: str | None) -> set[str]:
  """Fields of a --config=FILE[:variant], or of the base config (evaluate)."""
  if config_arg is None:
    from itr_jax.training import defaults  # pylint: disable=import-outside-toplevel
    config = defaults.base_config()
  else:
    variant = config_arg.partition(":")[2]
    spec = importlib.util.spec_from_file_location("readme_config",
                                                  _config_file(config_arg))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
  fields = set()
  def walk(node, prefix):
    for key, value in node.items():
      fields.add(prefix + key)
      if hasattr(value, "items"):
        walk(value, f"{prefix}{key}.")
  walk(config, "")
  return fields


@pytest.mark.parametrize("command", [c for c in COMMANDS if _module(c)])
def test_python_command_flags_exist(command, helps):
  module, args = _module(command), _arguments(command)
  text = helps[module]
  config = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
  for arg in args:
    if not arg.startswith("--"):
      if arg.startswith(("configs/", "launch/")):
        assert (ROOT / arg.split(":")[0]).exists(), arg
      continue
    name = arg[2:].split("=")[0]
    if name.startswith("config."):
      assert config or "--config.<field>" in text, f"{arg}: {module} takes no config"
      assert name.removeprefix("config.") in _config_fields(config), (
          f"{arg}: no such field in {config}")
    else:
      assert re.search(rf"--(\[no\])?{re.escape(name)}\b", text), (
          f"{module} has no flag --{name}:\n{text[:3000]}")
  if config:
    assert _config_file(config).exists(), config
