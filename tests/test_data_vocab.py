"""Tests for itr_jax.data.vocab: tokenizer, vocabulary building, JSON I/O, encoding."""
import json
import os

import numpy as np
import pytest

from itr_jax.data import vocab as V


@pytest.mark.parametrize("text,expected", [
    ("A Dog.", ["a", "dog", "."]),
    ("two  dogs,playing", ["two", "dogs", ",", "playing"]),
    ("don't stop", ["do", "n't", "stop"]),
    ("the dog's ball", ["the", "dog", "'s", "ball"]),
    ("a 3-year-old boy", ["a", "3", "-", "year", "-", "old", "boy"]),
    ("", []),
    ("   ", []),
])
def test_tokenize(text, expected):
  assert V.tokenize(text) == expected


def test_build_orders_specials_then_count_then_alphabet():
  vocab = V.Vocabulary.build(["b a a", "c b a", "z"], min_count=1)
  assert vocab.words == ["<pad>", "<start>", "<end>", "<unk>", "a", "b", "c",
                         "z"]
  assert vocab.pad_id == 0 and vocab.unk_id == 3
  # min_count drops rare words.
  assert V.Vocabulary.build(["b a a", "c b a", "z"], min_count=2).words[4:] == [
      "a", "b"]


def test_encode_pads_truncates_and_maps_unknown():
  vocab = V.Vocabulary.build(["a red dog"])  # a=4, dog=5, red=6
  ids, length = vocab.encode("A red cat", max_len=7)
  np.testing.assert_array_equal(ids, [1, 4, 6, 3, 2, 0, 0])
  assert length == 5 and ids.dtype == np.int32
  # Too long: first max_len - 2 words, <end> kept last.
  ids, length = vocab.encode("a red dog a red dog", max_len=5)
  np.testing.assert_array_equal(ids, [1, 4, 6, 5, 2])
  assert length == 5
  # Exactly fitting.
  ids, length = vocab.encode("a red dog", max_len=5)
  np.testing.assert_array_equal(ids, [1, 4, 6, 5, 2])
  # Empty text still gets <start> <end>.
  ids, length = vocab.encode("", max_len=4)
  np.testing.assert_array_equal(ids, [1, 2, 0, 0])
  assert length == 2
  with pytest.raises(ValueError, match="max_len"):
    vocab.encode("a", max_len=2)


def test_encode_batch_and_decode():
  vocab = V.Vocabulary.build(["a red dog", "a cat"])
  tokens, lengths = vocab.encode_batch(["a red dog", "a cat ."], max_len=6)
  assert tokens.shape == (2, 6) and tokens.dtype == np.int32
  np.testing.assert_array_equal(lengths, [5, 5])
  assert vocab.decode(tokens[0]) == "a red dog"
  assert vocab.decode(tokens[1]) == "a cat <unk>"


def test_save_load_roundtrip_is_vsepp_format(tmp_path):
  vocab = V.Vocabulary.build(["a red dog", "a cat"])
  path = str(tmp_path / "vocab.json")
  vocab.save(path)
  with open(path) as f:
    data = json.load(f)
  assert set(data) == {"word2idx", "idx2word", "idx"}
  assert data["idx"] == len(vocab)
  assert data["idx2word"]["0"] == "<pad>"
  assert V.Vocabulary.load(path) == vocab


def test_load_scan_style_file(tmp_path):
  # SCAN/VSE++ files: word2idx + idx2word keyed by strings + idx.
  words = ["<pad>", "<start>", "<end>", "<unk>", "dog"]
  path = tmp_path / "f30k_precomp_vocab.json"
  path.write_text(json.dumps({"word2idx": {w: i for i, w in enumerate(words)},
                              "idx2word": {str(i): w for i, w in
                                           enumerate(words)},
                              "idx": 5}))
  vocab = V.Vocabulary.load(str(path))
  assert vocab("dog") == 4 and vocab("cat") == 3


def test_missing_special_tokens_are_named(tmp_path):
  path = tmp_path / "v.json"
  path.write_text(json.dumps({"word2idx": {"<pad>": 0, "<start>": 1,
                                           "dog": 2}}))
  with pytest.raises(ValueError, match=r"\['<end>', '<unk>'\]"):
    V.Vocabulary.load(str(path))


@pytest.mark.parametrize("content,match", [
    ('{"idx": 3}', "word2idx"),
    ("not json", "cannot read"),
    ('{"word2idx": {"<pad>": 1, "<start>": 0, "<end>": 2, "<unk>": 3}}',
     "must be 0"),
    ('{"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 5}}',
     "0..len-1"),
])
def test_bad_vocab_files(tmp_path, content, match):
  path = tmp_path / "v.json"
  path.write_text(content)
  with pytest.raises(ValueError, match=match):
    V.Vocabulary.load(str(path))


def test_missing_vocab_file_is_named(tmp_path):
  with pytest.raises(ValueError, match="nope.json"):
    V.Vocabulary.load(str(tmp_path / "nope.json"))


def test_resolve_vocab_builds_from_train_only_and_saves(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "train_caps.txt").write_text("a dog\na dog\na cat\n")
  (data / "dev_caps.txt").write_text("a zebra\n")
  workdir = str(tmp_path / "work")
  vocab = V.resolve_vocab(str(data), workdir=workdir, min_count=2)
  assert vocab.words[4:] == ["a", "dog"]  # "cat" is rare, "zebra" is dev-only
  assert os.path.exists(os.path.join(workdir, "vocab.json"))
  # A resumed run reloads the saved file even if the data changed.
  (data / "train_caps.txt").write_text("a cat\na cat\n")
  assert V.resolve_vocab(str(data), workdir=workdir, min_count=2) == vocab
  # An explicit path wins; a data_dir vocab.json comes before building.
  other = V.Vocabulary.build(["x"])
  other.save(str(data / "vocab.json"))
  assert V.resolve_vocab(str(data)) == other
  assert V.resolve_vocab(str(data), vocab_path="") == other  # config default
  assert V.resolve_vocab(str(data), vocab_path=os.path.join(
      workdir, "vocab.json")) == vocab


def test_official_recipe_is_train_plus_dev_count_4_first_seen(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  (data / "train_caps.txt").write_text("zebra eats grass\na zebra eats\na dog eats\na zebra\n")
  (data / "dev_caps.txt").write_text("a dog eats grass\na dog\ngrass\ndog\n")
  # Counts over train + dev, by first occurrence: zebra 3, eats 4, grass 3,
  # a 5, dog 4 (3 of them in dev). Kept (>= 4) in that order: eats, a, dog.
  workdir = str(tmp_path / "work")
  official = V.resolve_vocab(str(data), workdir=workdir, recipe="official")
  assert official.words == ["<pad>", "<start>", "<end>", "<unk>", "eats", "a", "dog"]
  assert V.Vocabulary.load(os.path.join(workdir, "vocab.json")) == official
  # Today's recipe: train only, min count 1, by count then alphabet.
  assert V.resolve_vocab(str(data)).words[4:] == ["a", "eats", "zebra", "dog", "grass"]


def test_recipe_errors_and_an_existing_vocab_file_wins(tmp_path, caplog):
  data = tmp_path / "data"
  data.mkdir()
  (data / "train_caps.txt").write_text("a dog\n")
  with pytest.raises(ValueError, match="vocab_recipe"):
    V.resolve_vocab(str(data), recipe="scan")
  with pytest.raises(ValueError, match="vocab_min_count=2"):
    V.resolve_vocab(str(data), recipe="official", min_count=2)
  other = V.Vocabulary.build(["x"])
  other.save(str(data / "vocab.json"))
  assert V.resolve_vocab(str(data), recipe="official") == other
  assert "vocab_recipe='official' is not used" in caplog.text
