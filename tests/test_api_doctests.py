"""Runs the docstring examples of the documented API that no other test runs.

The API reference (docs/conf.py, API_MODULES) shows these examples, so each
must run. Modules whose examples another test file already runs are listed in
COVERED_ELSEWHERE; the last test checks that every module of the documented
packages with examples is in one list or the other, so a new module's
examples cannot go untested.
"""
import doctest
import importlib
import pathlib
import pkgutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

MODULES = [
    "itr_jax.losses.listwise", "itr_jax.losses.ranks", "itr_jax.losses.smooth_ndcg",
    "itr_jax.losses.sorted_ranks", "itr_jax.losses.triplet", "itr_jax.relevance.rsc",
    "itr_jax.models", "itr_jax.models.gru", "itr_jax.models.image_encoder",
    "itr_jax.models.initializers", "itr_jax.models.normalize", "itr_jax.models.pooling",
    "itr_jax.models.text_encoder", "itr_jax.models.vse", "itr_jax.training.defaults",
    "itr_jax.losses.contrastive", "itr_jax.losses.options", "itr_jax.models.dual_encoder",
    "itr_jax.models.dual_encoder_weights", "itr_jax.models.transformer",
]

# module -> the test file that runs its examples.
COVERED_ELSEWHERE = {
    "itr_jax.metrics.recall": "test_metrics_doctests.py",
    "itr_jax.metrics.ndcg": "test_metrics_doctests.py",
    "itr_jax.metrics.protocols": "test_metrics_doctests.py",
    "itr_jax.metrics.topk": "test_metrics_doctests.py",
    "itr_jax.models.bert_text_encoder": "test_bert_text_tower.py",
    "itr_jax.models.dense_max_pool": "test_dense_max_pool.py",
    "itr_jax.models.region_mlp": "test_vse_infty_training.py",
    "itr_jax.models.vse_infty": "test_vse_infty_training.py",
    "itr_jax.models.vse_infty_torch": "test_vse_infty_training.py",
    "itr_jax.models.registry": "test_sgraf.py",
    "itr_jax.models.scorer": "test_sgraf.py",
    "itr_jax.models.sgraf": "test_sgraf.py",
    "itr_jax.models.sgraf_weights": "test_sgraf.py",
}

# The packages whose modules the API reference documents.
DOCUMENTED_PACKAGES = ["itr_jax.losses", "itr_jax.relevance", "itr_jax.metrics",
                       "itr_jax.models"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0


def _modules_with_examples():
  names = ["itr_jax.training.defaults"]
  for package in DOCUMENTED_PACKAGES:
    names.append(package)
    path = ROOT / package.replace(".", "/")
    names += [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]
  found = []
  for name in names:
    rel = name.replace(".", "/")
    file = ROOT / (rel + "/__init__.py" if (ROOT / rel).is_dir() else rel + ".py")
    if ">>>" in file.read_text():
      found.append(name)
  return found


def test_every_documented_example_is_run():
  untested = [m for m in _modules_with_examples()
              if m not in MODULES and m not in COVERED_ELSEWHERE]
  assert not untested, f"add these modules to MODULES: {untested}"
  for module, test_file in COVERED_ELSEWHERE.items():
    text = (ROOT / "tests" / test_file).read_text()
    assert "testmod" in text and module.rsplit(".", 1)[1] in text, (module, test_file)
