"""Runs the docstring examples of the reliability modules of itr_jax.training."""
import doctest
import importlib

import pytest

MODULES = ["integrity", "validation", "errors", "paths", "plateau", "optimizer", "defaults"]


@pytest.mark.parametrize("name", MODULES + ["itr_jax.filesystem"])
def test_docstring_examples(name):
  module = importlib.import_module(name if "." in name else f"itr_jax.training.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
