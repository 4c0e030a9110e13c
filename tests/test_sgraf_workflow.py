"""SGR and SAF end to end: train, evaluate, ensemble, retrieve, fine-tune.

Its own file (the slowest test of the suite, three tiny trainings) so that
pytest-xdist can run it beside test_sgraf.py's model tests.
"""
import os

import numpy as np
import pytest


def test_sgr_and_saf_train_then_evaluate_as_an_ensemble(tmp_path):
  from itr_jax import evaluate as evaluate_cli  # pylint: disable=import-outside-toplevel
  from itr_jax.evaluation import evaluate  # pylint: disable=import-outside-toplevel
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  from tiny_config import tiny_config  # pylint: disable=import-outside-toplevel
  workdirs = {}
  for module in ("sgr", "saf"):
    config = tiny_config(str(tmp_path / "data"), num_epochs=1)
    config.model.update(name=module, bidirectional=True, sim_dim=8, score_chunk=8)
    workdirs[module] = str(tmp_path / module)
    best = trainer.train_and_evaluate(config, workdirs[module])
    assert np.isfinite(best["rsum"])
  from itr_jax.evaluation import runs as runs_lib  # pylint: disable=import-outside-toplevel
  runs = {m: runs_lib.load_run(w, None, "latest") for m, w in workdirs.items()}
  sgr_sims, saf_sims = (evaluate.split_similarity(r.model, r.params, r.split, r.vocab, r.config)
                        for r in (runs["sgr"], runs["saf"]))
  split = runs["sgr"].split
  assert sgr_sims.shape == (split.num_images, split.num_captions)
  assert np.all((sgr_sims > 0) & (sgr_sims < 1)) and not np.allclose(sgr_sims, saf_sims)
  report = evaluate_cli.evaluate_run(workdirs["sgr"], which="latest",
                                     ensemble=(workdirs["saf"],))
  want = evaluate.sims_report((sgr_sims + saf_sims) / 2,
                              captions_per_image=split.captions_per_image,
                              rsc_relevance=evaluate.split_relevance(split),
                              true_relevance=split.true_relevance)
  assert report["full"] == pytest.approx(want)
  assert "_ensemble-saf-" in report["files"]["report"]
  members = report["ensemble"]["members"]
  assert [m["workdir"] for m in members] == [workdirs["sgr"], workdirs["saf"]]
  assert members[1]["metrics"] == pytest.approx(evaluate.sims_report(
      saf_sims, captions_per_image=split.captions_per_image,
      rsc_relevance=evaluate.split_relevance(split), true_relevance=split.true_relevance))
  assert os.path.exists(report["files"]["report"])
  # itr_jax.retrieve on a cross-attention scorer: a split caption as free-text
  # query, and an image query, score exactly like the split's own matrix.
  from itr_jax.evaluation import retrieval  # pylint: disable=import-outside-toplevel
  run = runs["sgr"]
  image_repr, caption_repr = evaluate.encode_eval_split(run.model, run.params, split,
                                                        run.vocab, run.config)
  (result,) = retrieval.text_to_image(run, image_repr, [split.captions[3]], k=4)
  hits = [h["image"] for h in result["hits"]]
  np.testing.assert_allclose([h["score"] for h in result["hits"]], sgr_sims[hits, 3], rtol=1e-5)
  np.testing.assert_allclose(sorted(sgr_sims[:, 3], reverse=True)[:4],
                             [h["score"] for h in result["hits"]], rtol=1e-5)
  result = retrieval.image_to_text(run, image_repr, caption_repr, 2, k=6)
  hits = [h["caption"] for h in result["hits"]]
  np.testing.assert_allclose([h["score"] for h in result["hits"]], sgr_sims[2, hits], rtol=1e-5)
  np.testing.assert_allclose(sorted(sgr_sims[2], reverse=True)[:6],
                             [h["score"] for h in result["hits"]], rtol=1e-5)
  # Training moved the BatchNorm running statistics, which are checkpointed.
  from itr_jax.training import checkpointing  # pylint: disable=import-outside-toplevel
  ckpt = checkpointing.Checkpoints(workdirs["saf"], keep=2)
  restored = ckpt.manager.restore(ckpt.latest_step())
  ckpt.close()
  from itr_jax.training import init_from  # pylint: disable=import-outside-toplevel
  stats = init_from.model_variables_of(restored)["model_state"]["batch_stats"]
  assert float(np.asarray(stats["SAF_module"]["bn_var"])[0]) != 1.0
  # A fine-tune from the SAF run starts from all of its variables (BatchNorm
  # statistics too): its step-0 dev evaluation is the source's best one.
  # train.max_steps=2 ends mid-epoch, saved and evaluated.
  from itr_jax.training import reporting  # pylint: disable=import-outside-toplevel
  source = checkpointing.Checkpoints(workdirs["saf"], keep=2)
  best_step = source.best_step()
  source.close()
  (source_dev,) = [r for r in reporting.read_metrics(workdirs["saf"])
                   if r["kind"] == "dev" and r["step"] == best_step]
  config = tiny_config(str(tmp_path / "data"), num_epochs=1)
  config.model.update(name="saf", bidirectional=True, sim_dim=8, score_chunk=8)
  config.train.update(init_from=workdirs["saf"], max_steps=2)
  trainer.train_and_evaluate(config, str(tmp_path / "finetune"))
  dev = [r for r in reporting.read_metrics(str(tmp_path / "finetune")) if r["kind"] == "dev"]
  assert [r["step"] for r in dev] == [0, 2]
  for key in ("rsum", "rsc_ndcg_i2t", "rsc_ndcg_t2i"):
    assert dev[0][key] == pytest.approx(source_dev[key], abs=1e-6), key
  finetuned = checkpointing.Checkpoints(str(tmp_path / "finetune"), keep=2)
  assert finetuned.latest_step() == 2
  finetuned.close()
