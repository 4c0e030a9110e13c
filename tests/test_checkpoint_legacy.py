"""Checkpoints of the older train-state kinds restore into today's `TrainState`.

The fixtures (tests/fixtures/legacy_checkpoints/, made by
tests/fixtures/make_legacy_checkpoints.py with the code that had those kinds)
hold one checkpoint each of flax's plain TrainState (VSE++), StatefulTrainState
(VSE-infinity) and ScorerTrainState (SAF), after one train step, and every
saved leaf in expected.npz.
"""
import importlib.util
import os

import jax
import numpy as np
import pytest

from itr_jax.training import checkpointing
from itr_jax.training import optimizer
from itr_jax.training import state as state_lib
from itr_jax.training import trainer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
_spec = importlib.util.spec_from_file_location(
    "make_legacy_checkpoints", os.path.join(FIXTURES, "make_legacy_checkpoints.py"))
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def _flat(tree, prefix):
  return {prefix + "/".join(str(getattr(p, "key", p)) for p in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("kind", ["plain", "stateful", "scorer"])
def test_older_checkpoint_restores_and_trains_on(kind):
  c = make._config(kind)  # pylint: disable=protected-access
  model = trainer.build_model(c, make.VOCAB)
  tx = optimizer.create_optimizer(c.optim, steps_per_epoch=3)
  abstract = trainer.abstract_train_state(c, model, tx, make.SPLIT)
  ckpt = checkpointing.Checkpoints(os.path.join(FIXTURES, "legacy_checkpoints", kind),
                                   keep=1, read_only=True)
  try:
    assert ckpt.intact_step(1) is None
    state = ckpt.restore(1, abstract)
  finally:
    ckpt.close()
  assert isinstance(state, state_lib.TrainState) and int(state.step) == 1

  with np.load(os.path.join(FIXTURES, "legacy_checkpoints", kind, "expected.npz")) as f:
    want = dict(f)
  got = {**_flat(state.params, "params/"), "step": np.asarray(state.step)}
  stats = _flat(state.model_state.get("batch_stats", {}), "batch_stats/")
  if kind == "stateful":
    got.update({"model_state/" + k: v for k, v in stats.items()})
  else:
    got.update(stats)
  if kind == "scorer":
    got["dropout_rng"] = np.asarray(state.rng)
  else:  # the older two-tower kinds had no key: the legacy seed's
    np.testing.assert_array_equal(state.rng, state_lib.initial_rng(state_lib.LEGACY_RNG_SEED))
  assert sorted(got) == sorted(want)
  for name, value in want.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  assert set(state.model_state) == ({"batch_stats"} if kind != "plain" else set())

  # It is a state of this run in every leaf (optimizer moments included), so
  # the train step takes it: tests/test_train_end_to_end.py trains from such
  # a restored state.
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)
  assert np.any(np.asarray(jax.tree.leaves(state.opt_state)[1]) != 0)


def test_a_checkpoint_of_another_kind_does_not_fit():
  """A plain (VSE++) checkpoint into a state with batch statistics is refused."""
  c = make._config("stateful")  # pylint: disable=protected-access
  model = trainer.build_model(c, make.VOCAB)
  tx = optimizer.create_optimizer(c.optim, steps_per_epoch=3)
  abstract = trainer.abstract_train_state(c, model, tx, make.SPLIT)
  target, _ = state_lib.restore_target(state_lib.LEGACY_LAYOUTS["plain"], abstract)
  assert target is abstract  # restored as is: orbax then reports the mismatch
