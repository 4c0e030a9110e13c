"""The evaluation workflow: outputs named by checkpoint, exports, another data
folder, eval overrides, COCO per-fold numbers, fine-tuning from a run."""
import json
import os
import shutil
import types

import ml_collections
import numpy as np
import pytest

from itr_jax import evaluate as evaluate_cli
from itr_jax.data import precomputed
from itr_jax.evaluation import runs
from itr_jax.training import checkpointing
from itr_jax.training import init_from as init_from_lib
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import paths
from itr_jax.training import reporting
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib
from test_metrics_recall import reference_i2t, reference_t2i
from tiny_config import STEPS_PER_EPOCH, tiny_config


def _reference_report(sims, cpi=5):
  i2t, t2i = reference_i2t(sims, cpi), reference_t2i(sims, cpi)
  out = {f"i2t_{k}": v for k, v in i2t.items()}
  out.update({f"t2i_{k}": v for k, v in t2i.items()})
  out["rsum"] = sum(i2t[k] + t2i[k] for k in ("r1", "r5", "r10"))
  return out


def _other_step(workdir):
  checkpoints = checkpointing.Checkpoints(workdir)
  best = checkpoints.best_step()
  other = [s for s in checkpoints.manager.all_steps() if s != best]
  checkpoints.close()
  return best, other[0]


def test_step_results_and_exports_do_not_overwrite_the_best(tiny_run):
  _, workdir, _, _ = tiny_run
  best, other = _other_step(workdir)
  best_report = evaluate_cli.evaluate_run(workdir)
  best_path = os.path.join(workdir, "eval_test.json")
  before = open(best_path).read()
  report = evaluate_cli.evaluate_run(workdir, which=str(other), save_sims=True,
                                     save_embeddings=True)
  assert report["checkpoint_step"] == other != best_report["checkpoint_step"] == best
  assert open(best_path).read() == before
  stem = os.path.join(workdir, f"eval_test_step{other}")
  assert report["files"]["report"] == stem + ".json"
  with open(stem + ".json") as f:
    assert json.load(f)["full"]["rsum"] == pytest.approx(report["full"]["rsum"])
  sims = np.load(stem + "_sims.npy")
  image_emb, caption_emb = np.load(stem + "_image_emb.npy"), np.load(stem + "_caption_emb.npy")
  assert sims.dtype == np.float32 and sims.shape == (16, 80)
  np.testing.assert_allclose(sims, image_emb.astype(np.float64) @ caption_emb.T.astype(np.float64),
                             atol=1e-5)
  # The exported order is the one the metrics use: rows = images, column c
  # = caption c of image c // 5.
  want = _reference_report(sims)
  for key, value in want.items():
    assert report["full"][key] == pytest.approx(value, abs=1e-9), key


def test_another_data_folder_from_another_directory(tiny_run, tmp_path, monkeypatch):
  _, workdir, _, data_dir = tiny_run
  own = evaluate_cli.evaluate_run(workdir, "dev")
  copy = tmp_path / "copy_of_data"
  shutil.copytree(data_dir, copy)
  monkeypatch.chdir(tmp_path)
  report = evaluate_cli.evaluate_run(workdir, "dev", data_dir="copy_of_data")
  assert report["data_dir"] == str(copy)
  assert report["full"] == pytest.approx(own["full"])
  assert report["files"]["report"].endswith("eval_dev_data-copy_of_data.json")


def test_missing_synthetic_dataset_is_an_error_not_regenerated(tiny_run, tmp_path):
  _, workdir, _, _ = tiny_run
  missing = tmp_path / "nowhere"
  with pytest.raises(FileNotFoundError, match="No synthetic-scenes dataset"):
    evaluate_cli.evaluate_run(workdir, data_dir=str(missing))
  assert not missing.exists()


def test_eval_overrides_apply_and_model_fields_are_refused(tiny_run):
  _, workdir, _, _ = tiny_run
  full = evaluate_cli.evaluate_run(workdir, "dev")["full"]
  at3 = evaluate_cli.evaluate_run(workdir, "dev", overrides={"eval.ndcg_k": 3})
  assert at3["full"]["rsum"] == pytest.approx(full["rsum"])
  # NDCG@3 is named by its cutoff, never mistaken for full-ranking NDCG.
  assert "true_ndcg_i2t" not in at3["full"]
  assert at3["full"]["true_ndcg@3_i2t"] != pytest.approx(full["true_ndcg_i2t"])
  assert "_cfg-" in at3["files"]["report"]
  with pytest.raises(ValueError, match=r"model\.embed_size"):
    evaluate_cli.evaluate_run(workdir, overrides={"model.embed_size": 8})


def test_coco_protocol_reports_each_fold_and_their_mean(monkeypatch):
  rng = np.random.default_rng(0)
  image_emb = rng.normal(size=(25, 8)).astype(np.float32)
  caption_emb = (np.repeat(image_emb, 5, axis=0)
                 + 1.5 * rng.normal(size=(125, 8))).astype(np.float32)
  split = types.SimpleNamespace(num_images=25, captions_per_image=5, caption_emb=None,
                                true_relevance=None)
  config = ml_collections.ConfigDict({"eval": {"ndcg_k": 0}})
  run = runs.LoadedRun(config, "testall", split, None, None, None, 7, "/d")
  with pytest.raises(ValueError, match="needs the 5000-image COCO test split"):
    evaluate_cli.resolve_protocol("coco", 25)
  assert evaluate_cli.resolve_protocol("auto", 5000) == "coco"
  assert evaluate_cli.resolve_protocol("auto", 25) == "full"
  monkeypatch.setattr(evaluate_cli, "COCO_5K_IMAGES", 25)  # a COCO-shaped toy split
  report = evaluate_cli.score(run, image_emb @ caption_emb.T, protocol="coco")
  sims = image_emb.astype(np.float64) @ caption_emb.T.astype(np.float64)
  folds = [_reference_report(sims[5 * f:5 * f + 5, 25 * f:25 * f + 25]) for f in range(5)]
  assert len(report["coco_1k_folds"]) == 5
  for got, want in zip(report["coco_1k_folds"], folds):
    for key, value in want.items():
      assert got[key] == pytest.approx(value), key
  for key in folds[0]:
    assert report["coco_1k"][key] == pytest.approx(np.mean([f[key] for f in folds]))
    assert report["coco_5k"][key] == pytest.approx(_reference_report(sims)[key])
  text = evaluate_cli.format_report(report)
  assert "[coco_1k per fold]" in text and "\n    mean " in text


def test_relative_paths_are_recorded_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = ml_collections.ConfigDict({
      "data": {"data_dir": "data/x", "vocab_path": "", "caption_emb_path": "e/{split}.npy",
               "tfds_data_dir": "tfds"},
      "model": {"bert_path": ""}, "train": {"init_from": "../runs/a"}})
  paths.resolve_config_paths(config)
  assert config.data.data_dir == str(tmp_path / "data" / "x")
  assert config.data.caption_emb_path == str(tmp_path / "e" / "{split}.npy")
  assert config.data.tfds_data_dir == str(tmp_path / "tfds")
  assert config.data.vocab_path == "" and config.model.bert_path == ""
  assert config.train.init_from == str(tmp_path.parent / "runs" / "a")


def test_init_from_a_workdir_and_dev_eval_every_n_steps(tiny_run, tmp_path, capsys):
  _, source, _, data_dir = tiny_run
  source_best = checkpointing.Checkpoints(source)
  best_step, best_rsum = source_best.best_step(), source_best.best_metrics()["rsum"]
  source_best.close()
  config = tiny_config(data_dir, num_epochs=1)
  config.train.init_from = source
  config.eval.every_steps = 4
  workdir = str(tmp_path / "finetune")
  trainer.train_and_evaluate(config, workdir)
  assert (f"Initialised the model variables (params; not the optimizer state) from "
          f"{source}/checkpoints/{best_step}") in capsys.readouterr().out
  train = [r for r in reporting.read_metrics(workdir) if r["kind"] == "train"]
  # The first (compiling) step is timed apart, once.
  assert train[0]["compile_seconds"] > 0
  assert all("compile_seconds" not in r for r in train[1:])
  assert all(np.isfinite(r["steps_per_second"]) and r["steps_per_second"] > 0 for r in train)
  # No window is credited with time it did not have: the step-0 evaluation
  # before the first window, subtracted from it, clamped it to 1e-9 s (a rate
  # of ~1e9 steps/s; a real step of the tiny model takes > 10 us).
  assert all(r["steps_per_second"] < 1e5 for r in train), train
  dev = [r for r in reporting.read_metrics(workdir) if r["kind"] == "dev"]
  assert [r["step"] for r in dev] == [0, 4, 8, STEPS_PER_EPOCH]
  # Step 0 evaluates the source's best parameters: its dev RSUM.
  assert dev[0]["rsum"] == pytest.approx(best_rsum, abs=1e-6)
  saved = workdir_lib.load_config(workdir)
  assert saved.train.init_from == source
  assert saved.data.vocab_path == os.path.join(source, "vocab.json")
  # A checkpoint step directory works too, and a model of another shape is refused.
  step_dir = os.path.join(source, "checkpoints", str(best_step))
  assert init_from_lib.resolve(step_dir) == (os.path.join(source, "checkpoints"), best_step)
  bad = tiny_config(data_dir)
  bad.model.embed_size = 8
  model = trainer.build_model(bad, 10)
  tx = optimizer_lib.create_optimizer(bad.optim, 1)
  abstract = trainer.abstract_train_state(bad, model, tx,
                                          precomputed.load_split(data_dir, "dev"))
  with pytest.raises(ValueError, match="do not fit this model"):
    init_from_lib.load_params(step_dir, abstract.params)
  with pytest.raises(FileNotFoundError, match="neither a workdir"):
    init_from_lib.resolve(str(tmp_path))
  missing = tiny_config(data_dir)
  missing.train.init_from = str(tmp_path / "no_such_run")
  with pytest.raises(FileNotFoundError, match="neither a workdir"):
    trainer.train_and_evaluate(missing, str(tmp_path / "never_written"))
  assert not os.path.exists(tmp_path / "never_written")


def _tensorboard_events(workdir):
  import glob  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      yield event


def test_tensorboard_has_the_config_as_hparams_and_the_test_metrics(tiny_run):
  _, workdir, _, _ = tiny_run
  report = evaluate_cli.evaluate_run(workdir)
  tensors, plugins = {}, set()
  for event in _tensorboard_events(workdir):
    for value in event.summary.value:
      plugins.add(value.metadata.plugin_data.plugin_name)
      if value.tag.startswith("test/"):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        tensors[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
  assert "hparams" in plugins
  assert tensors["test/full/rsum"] == (report["checkpoint_step"],
                                       pytest.approx(report["full"]["rsum"]))


def _member_on(tmp_path, tiny_run, name, change):
  """A copy of the tiny run whose recorded data is a changed copy of its data."""
  _, workdir, _, data_dir = tiny_run
  data = tmp_path / f"data_{name}"
  shutil.copytree(data_dir, data)
  change(data)
  member = tmp_path / name
  shutil.copytree(workdir, member)
  config = json.loads((member / "config.json").read_text())
  config["data"]["data_dir"] = str(data)
  (member / "config.json").write_text(json.dumps(config))
  return str(member)


def test_ensemble_checks_members_first_names_results_by_members(tiny_run, tmp_path,
                                                                monkeypatch, capsys):
  _, workdir, _, _ = tiny_run

  def other_caption(data):
    text = (data / "test_caps.txt").read_text()
    first = text.index("\n")  # same length: the dataset's size check still holds
    (data / "test_caps.txt").write_text(text[:first][::-1] + text[first:])

  def other_images(data):
    images = np.load(data / "test_ims.npy")
    np.save(data / "test_ims.npy", images[::-1].copy())

  same = _member_on(tmp_path, tiny_run, "same", lambda data: None)
  same2 = _member_on(tmp_path, tiny_run, "same2", lambda data: None)
  for change, what in ((other_caption, "caption 0 differs"),
                       (other_images, "image features differ")):
    member = _member_on(tmp_path, tiny_run, change.__name__, change)
    with pytest.raises(ValueError, match=what):
      evaluate_cli.evaluate_run(workdir, ensemble=(same, member), write=False)
  # A mistyped member fails before anything is scored.
  scored = []
  real = evaluate_cli.evaluate.split_similarity
  monkeypatch.setattr(evaluate_cli.evaluate, "split_similarity",
                      lambda *a, **k: scored.append(1) or real(*a, **k))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate_cli.evaluate_run(workdir, ensemble=(same, str(tmp_path / "typo")))
  assert not scored
  own = evaluate_cli.evaluate_run(workdir, write=False)
  first = evaluate_cli.evaluate_run(workdir, ensemble=(same,), echo=True)
  second = evaluate_cli.evaluate_run(workdir, ensemble=(same, same2))
  assert first["files"]["report"] != second["files"]["report"]
  assert os.path.exists(first["files"]["report"]) and os.path.exists(second["files"]["report"])
  members = second["ensemble"]["members"]
  assert [m["workdir"] for m in members] == [workdir, same, same2]
  assert all(m["metrics"]["rsum"] == pytest.approx(own["full"]["rsum"]) for m in members)
  assert first["full"]["rsum"] == pytest.approx(own["full"]["rsum"])  # copies agree
  out = capsys.readouterr().out
  assert f"{same} (step {own['checkpoint_step']}" in out and "own RSUM" in out


def test_protocol_coco_is_refused_on_other_splits(tiny_run, tmp_path):
  _, workdir, _, _ = tiny_run
  with pytest.raises(ValueError, match="needs the 5000-image COCO test split"):
    evaluate_cli.evaluate_run(workdir, protocol="coco", write=False)
  assert evaluate_cli.protocol_tag("full", 5000) == "protocol-full"
  assert evaluate_cli.protocol_tag("auto", 16) == evaluate_cli.protocol_tag("full", 16) == ""
  with pytest.raises(FileNotFoundError, match="does not exist"):
    evaluate_cli.evaluate_run(str(tmp_path / "nowhere"))


def test_coco_ids_are_read_and_checked_before_scoring(tmp_path):
  """--coco_ids is refused for a split that is not COCO-shaped, and read
  (bounded, no zip bombs, both arrays present) before any encoding."""
  import zipfile  # pylint: disable=import-outside-toplevel
  split = types.SimpleNamespace(num_images=5000, captions_per_image=5)
  run = runs.LoadedRun(None, "test", split, None, None, None, 0, "/d")
  good = str(tmp_path / "ids.npz")
  np.savez(good, image_ids=np.arange(5000), caption_ids=np.arange(25000))
  ids = evaluate_cli.read_coco_ids(good, "auto", run)
  np.testing.assert_array_equal(ids["caption_ids"], np.arange(25000))
  small = runs.LoadedRun(None, "dev", types.SimpleNamespace(num_images=25), None, None,
                         None, 0, "/d")
  with pytest.raises(ValueError, match="--coco_ids needs the coco protocol"):
    evaluate_cli.read_coco_ids(good, "auto", small)
  partial = str(tmp_path / "partial.npz")
  np.savez(partial, image_ids=np.arange(5000))
  with pytest.raises(ValueError, match="has no image_ids and caption_ids"):
    evaluate_cli.read_coco_ids(partial, "coco", run)
  bomb = str(tmp_path / "bomb.npz")  # 1 GB of zeros in a few MB
  with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
    with z.open("image_ids.npy", "w", force_zip64=True) as member:
      for _ in range(64):
        member.write(bytes(16 << 20))
  assert os.path.getsize(bomb) < (4 << 20)
  with pytest.raises(ValueError, match=r"is not a readable NumPy .npz: its members would "
                                       r"inflate to 1073741824 bytes"):
    evaluate_cli.read_coco_ids(bomb, "coco", run)
