"""Sphinx configuration of the itr_jax documentation (MyST markdown + autodoc).

Build it with `bash launch/docs.sh` (HTML in docs/_build/html, warnings are
errors). The API pages are generated from the docstrings of the modules in
API_MODULES; a module that is not importable in this checkout (an optional
one still being written) is left out instead of failing the build.
"""
import ast
import importlib.util
import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import itr_jax  # pylint: disable=wrong-import-position

project = "itr_jax"
author = "the itr_jax authors"
copyright = "the itr_jax authors"  # pylint: disable=redefined-builtin
release = itr_jax.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
templates_path = ["_templates"]

# MyST: $...$ / $$...$$ maths, ::: fences, heading anchors for [x](page.md#anchor).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Every reference must resolve: a link to a missing page, anchor or API object
# is a warning, and launch/docs.sh turns warnings into errors.
nitpicky = True
# Types from other libraries (no intersphinx: the build needs no network).
nitpick_ignore_regex = [
    # Config dataclasses of a model that the models page documents with it.
    (r"py:class", r"itr_jax\.models\.dual_encoder\.DualEncoderConfig"),
    (r"py:.*", r"(jax|jnp|np|numpy|flax|nn|optax|ml_collections|tf|chex|collections|typing|os|pathlib|concurrent|threading|argparse|absl)\..*"),
    (r"py:class", r"(Array|ArrayLike|Any|Callable|Sequence|Mapping|Iterable|Iterator|Optional|Union|PRNGKey|PyTree|Variables|Module|DTypeLike|Shape|ndarray|ConfigDict|module|function|optional|callable|default|dtype|array|array-like|.*Array.*)"),
]

# Docstrings write names and shapes in single backticks (Markdown style).
default_role = "code"

autosummary_generate = True
# Flax modules: their dataclass fields are the constructor arguments (documented
# in the class docstring); setup() and the Module machinery are Flax's.
autodoc_default_options = {"members": True, "show-inheritance": True,
                           "exclude-members": "setup, parent, name"}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes as fields of the class entry: Flax dataclass fields are also class
# attributes, which autodoc would document a second time.
napoleon_use_ivar = True

# The API reference: public modules, documented from their docstrings.
# Optional modules (e.g. itr_jax.inference) appear once they exist.
API_MODULES = [
    "itr_jax.losses",
    "itr_jax.relevance",
    "itr_jax.metrics",
    "itr_jax.models",
    "itr_jax.models.scorer",
    "itr_jax.training.defaults",
    "itr_jax.inference",
]


def _api_page() -> str:
  present = [m for m in API_MODULES if importlib.util.find_spec(m) is not None]
  lines = "\n".join(f"   {m}" for m in present)
  return ("# API reference\n\n"
          "Generated from the docstrings of the public modules; every example\n"
          "in them runs as a doctest in the test suite.\n\n"
          "```{eval-rst}\n.. autosummary::\n   :toctree: generated\n"
          "\n" + lines + "\n```\n\n"
          "```{toctree}\n:maxdepth: 1\n\nconfigs\n```\n")


def _configs_page() -> str:
  """The experiment configs of configs/, each with its docstring."""
  parts = ["# Experiment configs\n\n"
           "The files under `configs/` (passed as `--config=FILE[:variant]`); each\n"
           "starts from {py:func}`itr_jax.training.defaults.base_config`, whose fields\n"
           "are listed on the [configs](../guides/configs.md) page.\n"]
  # configs/*.py first, then the sweeps of configs/ablations/.
  for path in sorted((ROOT / "configs").rglob("*.py"), key=lambda p: (len(p.parts), p)):
    doc = ast.get_docstring(ast.parse(path.read_text())) or "(no docstring)"
    parts.append(f"\n## `{path.relative_to(ROOT)}`\n\n```text\n{doc}\n```\n")
  return "".join(parts)


def _write(page: pathlib.Path, text: str) -> None:
  if not page.exists() or page.read_text() != text:
    page.write_text(text)


# Written before Sphinx reads the sources (autosummary scans index.md).
(DOCS / "api").mkdir(exist_ok=True)
_write(DOCS / "api" / "index.md", _api_page())
_write(DOCS / "api" / "configs.md", _configs_page())

html_theme = "sphinx_book_theme"
html_title = f"itr_jax {release}"
html_theme_options = {
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
