"""Official PyTorch checkpoints imported and evaluated give the official numbers.

Fixtures (tests/fixtures/torch_checkpoints/, made by
tests/fixtures/make_torch_checkpoints.py with the official code of
Listwise_ITR, VSE-infinity and SGRAF): one tiny `model_best.pth.tar` per
backbone, saved by the official `train.py`, the tiny test split it was
evaluated on, and the official `evalrank`'s R@K / RSUM and score matrix.
No PyTorch needed: the checkpoints are read by itr_jax.tools.torch_pickle.
"""
import argparse
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from itr_jax import evaluate
from itr_jax.tools import import_torch_checkpoint as importer
from itr_jax.tools import torch_pickle

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "torch_checkpoints")
DATA = os.path.join(FIXTURES, "data")
VOCAB = os.path.join(FIXTURES, "vocab.json")
with open(os.path.join(FIXTURES, "official_results.json")) as _f:
  OFFICIAL = json.load(_f)


def checkpoint(backbone):
  return os.path.join(FIXTURES, f"{backbone}.pth.tar")


@pytest.mark.parametrize("backbone", ["vse", "vse_infty", "sgr", "saf"])
def test_imported_checkpoint_evaluates_to_the_official_numbers(backbone, tmp_path):
  workdir = str(tmp_path / backbone)
  info = importer.import_checkpoint(checkpoint(backbone), backbone, VOCAB, workdir)
  assert info["step"] == 7 and info["official_epoch"] == 1  # as the fixture saved them
  report = evaluate.evaluate_run(workdir, "test", data_dir=DATA, save_sims=True)
  full, want = report["full"], OFFICIAL[backbone]
  got = ([full[f"i2t_r{k}"] for k in (1, 5, 10)], [full[f"t2i_r{k}"] for k in (1, 5, 10)])
  assert got == (want["i2t"], want["t2i"])
  assert full["rsum"] == pytest.approx(want["rsum"], abs=1e-9)
  sims = np.load(report["files"]["sims"])
  official = np.load(os.path.join(FIXTURES, "official_sims.npz"))[backbone]
  # SGRAF's fixture scales its last layer up (make_torch_checkpoints.spread_scores),
  # and float32 rounding of the similarity network with it: 1e-4 there.
  rtol = 1e-4 if backbone in ("sgr", "saf") else 1e-5
  np.testing.assert_allclose(sims, official, rtol=rtol, atol=rtol * np.abs(official).max())


def test_reader_matches_the_pickled_objects_without_torch():
  ckpt = torch_pickle.load(checkpoint("sgr"))
  assert isinstance(ckpt["opt"], argparse.Namespace)
  assert ckpt["opt"].module_name == "SGR" and ckpt["opt"].sim_dim == 8
  img, txt, sim = ckpt["model"]
  assert img["fc.weight"].shape == (8, 8) and img["fc.weight"].dtype == np.float32
  assert txt["embed.weight"].shape == (19, 4)
  # The BatchNorm counter is an int64 scalar tensor (empty size, no strides).
  assert sim["v_global_w.embedding_local.1.num_batches_tracked"].shape == ()
  assert isinstance(ckpt["best_rsum"], np.float64)


def _zip_checkpoint(obj) -> io.BytesIO:
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as z:
    z.writestr("ckpt/data.pkl", pickle.dumps(obj, protocol=2))
  buf.seek(0)
  return buf


class Payload:
  def __reduce__(self):
    return (os.system, ("echo should never run",))


def test_reader_refuses_globals_outside_the_allow_list():
  with pytest.raises(torch_pickle.UnsupportedPickleError, match="posix.system|os.system"):
    torch_pickle.load(_zip_checkpoint({"model": Payload()}))


def test_legacy_file_without_torch_is_a_clear_error(tmp_path, monkeypatch):
  path = tmp_path / "old.pth.tar"
  path.write_bytes(pickle.dumps({"model": []}, protocol=2))  # not a zip
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import fails
  with pytest.raises(ValueError, match=r"legacy \(non-zip\).*itr_jax\[torch\]"):
    torch_pickle.load(str(path))


def test_options_become_the_official_recipe():
  opt = vars(torch_pickle.load(checkpoint("vse_infty"))["opt"])
  c = importer.config_from_opt(opt, "vse_infty")
  assert (c.model.name, c.model.embed_size, c.model.word_dim, c.model.pooling) == (
      "vse_infty", 8, 4, "gpo")
  assert (c.optim.name, c.optim.learning_rate, c.train.warmup_epochs) == (
      "adamw", opt["learning_rate"], opt["vse_mean_warmup_epochs"])
  sgr = importer.config_from_opt(vars(torch_pickle.load(checkpoint("sgr"))["opt"]), "sgr")
  assert (sgr.model.sim_dim, sgr.model.sgr_steps, sgr.train.num_epochs, sgr.optim.lr_update,
          sgr.eval.ties) == (8, 3, 40, 30, "official")


@pytest.mark.parametrize("change, match", [
    ({"precomp_enc_type": "backbone"}, r"'precomp_enc_type': 'backbone'.*does not implement"),
    ({"no_txtnorm": True}, "no_txtnorm"),
    ({"mystery": 1}, r"\['mystery'\].*--backbone=vse_infty"),
])
def test_unsupported_or_unknown_options_are_named(change, match):
  opt = {**vars(torch_pickle.load(checkpoint("vse_infty"))["opt"]), **change}
  with pytest.raises(ValueError, match=match):
    importer.config_from_opt(opt, "vse_infty")


def test_wrong_backbone_vocab_or_workdir_fail_before_writing(tmp_path):
  with pytest.raises(ValueError, match="SGRAF's 'SGR' module; import it with --backbone=sgr"):
    importer.import_checkpoint(checkpoint("sgr"), "saf", VOCAB, str(tmp_path / "a"))
  assert not (tmp_path / "a").exists()
  small = tmp_path / "vocab.json"
  words = json.load(open(VOCAB))["word2idx"]
  small.write_text(json.dumps({"word2idx": dict(list(words.items())[:-1])}))
  with pytest.raises(ValueError, match="has 18 words but the checkpoint's word embedding has 19"):
    importer.import_checkpoint(checkpoint("vse"), "vse", str(small), str(tmp_path / "b"))
  assert not (tmp_path / "b").exists()
  (tmp_path / "c").mkdir()
  (tmp_path / "c" / "keep.txt").write_text("mine")
  with pytest.raises(ValueError, match="is not empty"):
    importer.import_checkpoint(checkpoint("vse"), "vse", VOCAB, str(tmp_path / "c"))
  assert os.listdir(tmp_path / "c") == ["keep.txt"]


@pytest.mark.parametrize("module", [torch_pickle, importer])
def test_doctests(module):
  import doctest  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(module)
  assert result.attempted > 0 and result.failed == 0


def test_a_failed_import_writes_nothing_and_the_retry_works(tmp_path, full_disk_on_checkpoint_save):
  workdir = str(tmp_path / "run")
  with pytest.raises(OSError, match="No space left"):
    importer.import_checkpoint(checkpoint("vse"), "vse", VOCAB, workdir)
  full_disk_on_checkpoint_save.undo()
  assert os.listdir(tmp_path) == []  # neither the workdir nor its staging copy
  info = importer.import_checkpoint(checkpoint("vse"), "vse", VOCAB, workdir)
  assert info["step"] == 7 and sorted(os.listdir(workdir))[:2] == ["checkpoints", "config.json"]


def test_a_hostile_checkpoint_is_refused_in_one_sentence_before_writing(tmp_path):
  bad = tmp_path / "evil.pth.tar"
  raw = open(checkpoint("vse"), "rb").read()
  bad.write_bytes(raw.replace(b"X\x02\x00\x00\x00", b"X\x02\x00\x00\xff", 1))  # garble a string
  with pytest.raises(ValueError) as info:
    importer.import_checkpoint(str(bad), "vse", VOCAB, str(tmp_path / "run"))
  assert str(bad) in str(info.value) and "\n" not in str(info.value)
  assert not (tmp_path / "run").exists()
