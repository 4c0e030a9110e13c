"""Population training: a vmapped member trains exactly like a separate run.

A population of two members (λ = 0, τ = 0.05 and λ = 1) on the tiny demo
config for one epoch, logging every step; the λ = 1 member's per-step metrics
must match the plain (un-vmapped, single-device) train step of the same config
run over the same batches, up to float32 reassociation under vmap.
"""
import json
import os

import jax
import numpy as np
import pytest

from itr_jax import losses
from itr_jax import sweeps
from itr_jax.sweeps import population
from itr_jax.training import experiment_data
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import reporting
from itr_jax.training import train_step
from itr_jax.training import trainer
from tiny_config import tiny_config


def _reference_metrics(config, workdir):
  """Per-step metrics of the plain train step over the run's batches."""
  data = experiment_data.prepare(config, workdir)
  model = trainer.build_model(config, len(data.vocab))
  tx = optimizer_lib.create_optimizer(config.optim, data.steps_per_epoch)
  state = trainer.create_train_state(config, model, tx, data.train)
  step = train_step.make_train_step(model, losses.LossOptions.from_config(config.loss))
  batches = data.train_batches(start_step=0)
  result = []
  for _ in range(data.steps_per_epoch * config.train.num_epochs):
    state, metrics = step(state, next(batches))
    result.append(jax.device_get(metrics))
  return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("population")
  base = tiny_config(str(root / "data"), num_epochs=1)
  base.train.log_every_steps = 1
  members = sweeps.expand(str(root / "pop"), [{"loss.weight": 0.0, "loss.tau": 0.05},
                                              {"loss.weight": 1.0}])
  best = population.train_population(base, members)
  reference = _reference_metrics(sweeps.apply_overrides(base, members[1].overrides),
                                 str(root / "ref"))
  return members, best, reference


def test_member_matches_the_plain_train_step(runs):
  members, _, reference = runs
  train = [r for r in reporting.read_metrics(members[1].workdir) if r["kind"] == "train"]
  assert [r["step"] for r in train] == list(range(1, len(reference) + 1))
  for record, ref in zip(train, reference):
    for k in ("loss", "pairwise", "listwise", "ndcg_i2t", "hard_ndcg_t2i", "grad_norm"):
      np.testing.assert_allclose(record[k], ref[k], rtol=1e-4, atol=1e-6,
                                 err_msg=f"{k} at step {record['step']}")


def test_members_differ_and_results_are_written(runs):
  members, best, _ = runs
  losses = [[r["listwise"] for r in reporting.read_metrics(m.workdir) if r["kind"] == "train"]
            for m in members]
  assert losses[0] != losses[1]  # different λ/τ: different trajectories
  for m, b in zip(members, best):
    assert m.done
    with open(os.path.join(m.workdir, "eval_test.json")) as f:
      report = json.load(f)
    assert report["checkpoint_step"] == b["best_step"]
    assert set(report["full"]) >= {"rsum", "true_ndcg_i2t", "rsc_ndcg_i2t"}
    with open(os.path.join(m.workdir, "config.json")) as f:
      assert json.load(f)["loss"]["weight"] == m.overrides["loss.weight"]
  # Evaluating a member says why it has no checkpoint.
  from itr_jax.evaluation import runs as runs_lib  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=r"no checkpoints: it was trained in a population sweep"):
    runs_lib.load_run(members[0].workdir)


def test_population_refuses_fields_it_cannot_vary():
  population.check_population([{"seed": 1, "loss.tau": 0.1}])
  with pytest.raises(ValueError, match="model.pooling"):
    population.check_population([{"seed": 1, "model.pooling": "gpo"}])
