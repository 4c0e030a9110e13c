"""The pretrained BERT text tower: model, WordPiece ids, optimizer, training.

The real all-MiniLM-L6-v2 is checked against sentence-transformers' own
vectors (tests/fixtures/minilm_reference.npz, see test_text_encoders_minilm.py
for how they were made); training runs use a tiny random BERT written as a
local model directory (config.json, vocab.txt, model.safetensors), which goes
through exactly the loading path of the real one.
"""
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from itr_jax import models
from itr_jax.data import vocab as vocab_lib
from itr_jax.data.wordpiece_vocab import WordPieceVocabulary
from itr_jax.text_encoders import BertConfig
from itr_jax.text_encoders import SentenceBert
from itr_jax.text_encoders import load_pretrained_bert
from itr_jax.text_encoders.wordpiece import WordPiece
from itr_jax.training import experiment_data
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import trainer
from test_text_encoders import TINY
from test_text_encoders import _random_state_dict
from tiny_config import params_at
from tiny_config import tiny_config

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures",
                       "minilm_reference.npz")
CLS, SEP = 101, 102  # all-MiniLM-L6-v2's (bert-base-uncased's) ids


def _init(model, max_len=8):
  """Random float32 params of `model`'s shapes (nothing compiled: fast)."""
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 4)),
                          jnp.zeros((1, max_len), jnp.int32),
                          jnp.full((1,), 2, jnp.int32))["params"]
  rng = np.random.default_rng(0)
  return jax.tree.map(
      lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, dict)
               else {prefix + k: v})
  return out


def test_tower_with_minilm_weights_pools_like_sentence_transformers():
  data = np.load(FIXTURE)
  ids = np.split(data["token_ids"], np.cumsum(data["token_lengths"])[:-1])
  keep = [i for i, n in enumerate(data["token_lengths"]) if n <= 30]
  sentences = [str(data["sentences"][i]) for i in keep]
  vocab = WordPieceVocabulary()
  tokens, lengths = vocab.encode_batch(sentences, max_len=32)
  for row, i in enumerate(keep):  # the adapter's ids are the reference's
    np.testing.assert_array_equal(tokens[row, :lengths[row]], ids[i])
    assert not tokens[row, lengths[row]:].any()

  model = models.create_model(ml_collections.ConfigDict(dict(
      vocab_size=len(vocab), embed_size=8, text_tower="bert")))
  pretrained = models.pretrained_text_tower({"text_tower": "bert",
                                             "bert_path": ""})
  params = models.with_pretrained_bert(_init(model), pretrained)
  emb, state = jax.jit(lambda p, t, n: model.apply(
      {"params": p}, t, n, method="encode_texts", mutable=["intermediates"],
      capture_intermediates=lambda m, _: isinstance(m, SentenceBert)))(
          params, tokens, lengths)
  pooled = np.asarray(
      state["intermediates"]["text_encoder"]["sentence_bert"]["__call__"][0],
      np.float64)
  # Before the projection: sentence-transformers' mean pooling, unnormalised.
  norms = np.linalg.norm(pooled, axis=1, keepdims=True)
  assert not np.allclose(norms, 1.0, atol=1e-2)
  np.testing.assert_allclose(pooled / norms, data["embeddings"][keep],
                             atol=1e-5)
  # After: l2norm(pooled W + b), in float64.
  proj = params["text_encoder"]["projection"]
  want = pooled @ np.float64(proj["kernel"]) + np.float64(proj["bias"])
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(emb), want, atol=1e-5)


def test_wordpiece_vocabulary_pads_truncates_and_sizes():
  vocab = WordPieceVocabulary()
  assert len(vocab) == 30522
  texts = ["a small red dog next to a blue car in the park", "OK"]
  raw = WordPiece(vocab.model_dir)(texts)
  tokens, lengths = vocab.encode_batch(texts, max_len=8)
  assert tokens.dtype == np.int32 and lengths.dtype == np.int32
  # Long caption: first 6 pieces, then [SEP]; short one: zero padded.
  np.testing.assert_array_equal(tokens[0], raw[0][:7] + [SEP])
  np.testing.assert_array_equal(tokens[1], raw[1] + [0] * (8 - len(raw[1])))
  np.testing.assert_array_equal(lengths, [8, len(raw[1])])
  assert raw[0][0] == CLS and raw[1][-1] == SEP
  with pytest.raises(ValueError, match="max_len"):
    vocab.encode_batch(texts, max_len=2)


def test_bad_bert_path_and_tower_name(tmp_path):
  with pytest.raises(ValueError, match="bert_path"):
    WordPieceVocabulary(str(tmp_path / "absent"))
  with pytest.raises(ValueError, match="bert_path"):
    models.create_model(ml_collections.ConfigDict(dict(
        vocab_size=5, text_tower="bert", bert_path=str(tmp_path / "absent"))))
  with pytest.raises(ValueError, match="vocab_size=30523 exceeds"):
    models.create_model(ml_collections.ConfigDict(dict(
        vocab_size=30523, text_tower="bert")))
  with pytest.raises(ValueError, match="text_tower must be one of"):
    _init(models.VSEModel(vocab_size=5, text_tower="lstm"))


def test_with_pretrained_bert_checks_the_tree():
  model = models.VSEModel(vocab_size=TINY.vocab_size, embed_size=4,
                          text_tower="bert", bert_config=TINY)
  params = _init(model)
  ones = jax.tree.map(np.ones_like,
                      params["text_encoder"]["sentence_bert"]["bert"])
  loaded = models.with_pretrained_bert(params, ones)
  for name, leaf in _flat(loaded).items():
    if name.startswith("text_encoder/sentence_bert/bert/"):
      np.testing.assert_array_equal(leaf, 1.0)
    else:  # everything else untouched
      np.testing.assert_array_equal(leaf, _flat(params)[name])
  wrong = jax.tree.map(lambda x: x, ones)
  wrong["layer_0"]["intermediate"]["kernel"] = np.ones((3, 3), np.float32)
  with pytest.raises(ValueError, match="layer_0/intermediate/kernel has shape"):
    models.with_pretrained_bert(params, wrong)
  del wrong["layer_1"]
  with pytest.raises(ValueError, match="missing.*layer_1"):
    models.with_pretrained_bert(params, wrong)
  gru = _init(models.VSEModel(vocab_size=5, word_dim=3, embed_size=4))
  with pytest.raises(ValueError, match="not BERT"):
    models.with_pretrained_bert(gru, ones)


def test_lr_multiplier_applies_exactly_to_the_pretrained_bert():
  model = models.VSEModel(vocab_size=TINY.vocab_size, embed_size=4,
                          text_tower="bert", bert_config=TINY)
  params = _init(model)
  cfg = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, grad_clip=0.0, lr_update=10, lr_decay=0.1,
      lr_multipliers={"sentence_bert": 0.1}))
  tx = optimizer_lib.create_optimizer(cfg, steps_per_epoch=5)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  flat = _flat(updates)
  assert any(k.startswith("text_encoder/projection/") for k in flat)
  assert any(k.startswith("image_encoder/") for k in flat)
  for name, update in flat.items():
    # Adam's first step with g = 1 is -lr (up to eps) for every element.
    lr = 1e-4 if name.startswith("text_encoder/sentence_bert/bert/") else 1e-3
    np.testing.assert_allclose(update, -lr, rtol=1e-5, err_msg=name)


def _tiny_bert_dir(path, words):
  """A local BERT directory: config, WordPiece vocab.txt, random weights."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  os.makedirs(path)
  tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(words)
  with open(os.path.join(path, "vocab.txt"), "w") as f:
    f.write("\n".join(tokens) + "\n")
  config = dict(model_type="bert", vocab_size=len(tokens), hidden_size=12,
                num_hidden_layers=2, num_attention_heads=3,
                intermediate_size=20, max_position_embeddings=32,
                type_vocab_size=2)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(path, "sentence_bert_config.json"), "w") as f:
    json.dump({"max_seq_length": 32, "do_lower_case": False}, f)
  config.pop("model_type")
  sd = _random_state_dict(BertConfig(**config), seed=1)
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()},
            os.path.join(path, "model.safetensors"))
  return str(path)


def test_tiny_training_run_with_a_bert_tower(tmp_path, monkeypatch):
  data_dir, workdir = str(tmp_path / "data"), str(tmp_path / "run")
  config = tiny_config(data_dir, num_epochs=1)
  words = vocab_lib.Vocabulary.load(
      os.path.join(experiment_data.data_dir(config), "vocab.json")).words[4:]
  bert_dir = _tiny_bert_dir(tmp_path / "bert", words)
  config.model.text_tower = "bert"
  config.model.bert_path = bert_dir
  config.optim.lr_multipliers = {"sentence_bert": 0.1}

  best = trainer.train_and_evaluate(config, workdir)
  assert best["best_step"] == 10 and np.isfinite(best["rsum"])
  assert "vocab.json" not in os.listdir(workdir)  # WordPiece: nothing to keep
  pretrained = load_pretrained_bert(bert_dir).params
  trained = params_at(workdir, 10)
  # Started from the pretrained weights: 10 Adam steps at 0.1 x 5e-3 move a
  # weight by well under 0.05, a fresh random init is O(1) away.
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))),
                       trained["text_encoder"]["sentence_bert"]["bert"],
                       pretrained)
  assert 0 < max(jax.tree.leaves(diffs)) < 0.05

  # Resuming restores the fine-tuned tower; the pretrained one is not read.
  def no_reload(_):
    raise AssertionError("pretrained weights loaded on resume")
  monkeypatch.setattr(models, "pretrained_text_tower", no_reload)
  config.train.num_epochs = 2
  best = trainer.train_and_evaluate(config, workdir)
  assert np.isfinite(best["rsum"]) and best["best_step"] in (10, 20)
  assert params_at(workdir, 20) is not None


@pytest.mark.parametrize("name", ["itr_jax.data.wordpiece_vocab",
                                  "itr_jax.models.bert_text_encoder"])
def test_docstring_examples(name):
  import doctest  # pylint: disable=import-outside-toplevel
  import importlib  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(importlib.import_module(name),
                           optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0
