"""Runs the docstring examples of the itr_jax.metrics modules (eccv's example
needs the full 5000 x 25000 test matrix, so it is covered by test_metrics_eccv)."""
import doctest
import importlib

import pytest

MODULES = ["recall", "ndcg", "protocols", "topk"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(f"itr_jax.metrics.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0
