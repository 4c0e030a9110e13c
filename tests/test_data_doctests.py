"""Runs the docstring examples of the itr_jax.data modules."""
import doctest
import importlib

import pytest

MODULES = ["vocab", "precomputed", "text_features", "synthetic_scenes",
           "pipeline", "testing", "tfds_source", "check_record", "staging",
           "image_preprocessing", "image_sources", "synthetic_pixels"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(f"itr_jax.data.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
