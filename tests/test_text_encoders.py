"""Flax BERT, weight mapping, pooling and bucketing on tiny random models.

The real all-MiniLM-L6-v2 checks are in test_text_encoders_minilm.py.
"""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from itr_jax.text_encoders import bert_weights
from itr_jax.text_encoders.bert import BertConfig
from itr_jax.text_encoders.bert import BertEncoder
from itr_jax.text_encoders.bert import SentenceBert
from itr_jax.text_encoders.length_buckets import length_buckets
from itr_jax.text_encoders.length_buckets import plan_batches
from itr_jax.text_encoders.mean_pool import mean_pool

TINY = BertConfig(vocab_size=37, hidden_size=12, num_hidden_layers=2,
                  num_attention_heads=3, intermediate_size=20,
                  max_position_embeddings=16, type_vocab_size=2)


def _random_state_dict(config, seed=0):
  """A PyTorch-layout BertModel state dict (Linear weights are [out, in])."""
  rng = np.random.default_rng(seed)
  h, f = config.hidden_size, config.intermediate_size
  sd = {
      "embeddings.word_embeddings.weight": rng.normal(size=(config.vocab_size, h)),
      "embeddings.position_embeddings.weight":
          rng.normal(size=(config.max_position_embeddings, h)),
      "embeddings.token_type_embeddings.weight":
          rng.normal(size=(config.type_vocab_size, h)),
      "embeddings.LayerNorm.weight": 1 + 0.1 * rng.normal(size=h),
      "embeddings.LayerNorm.bias": 0.1 * rng.normal(size=h),
      "embeddings.position_ids": np.arange(config.max_position_embeddings)[None],
      "pooler.dense.weight": rng.normal(size=(h, h)),
      "pooler.dense.bias": rng.normal(size=h),
  }
  for i in range(config.num_hidden_layers):
    p = f"encoder.layer.{i}."
    for n in ("query", "key", "value"):
      sd[p + f"attention.self.{n}.weight"] = rng.normal(size=(h, h)) / math.sqrt(h)
      sd[p + f"attention.self.{n}.bias"] = 0.1 * rng.normal(size=h)
    sd[p + "attention.output.dense.weight"] = rng.normal(size=(h, h)) / math.sqrt(h)
    sd[p + "attention.output.dense.bias"] = 0.1 * rng.normal(size=h)
    sd[p + "intermediate.dense.weight"] = rng.normal(size=(f, h)) / math.sqrt(h)
    sd[p + "intermediate.dense.bias"] = 0.1 * rng.normal(size=f)
    sd[p + "output.dense.weight"] = rng.normal(size=(h, f)) / math.sqrt(f)
    sd[p + "output.dense.bias"] = 0.1 * rng.normal(size=h)
    for n in ("attention.output.LayerNorm", "output.LayerNorm"):
      sd[p + n + ".weight"] = 1 + 0.1 * rng.normal(size=h)
      sd[p + n + ".bias"] = 0.1 * rng.normal(size=h)
  return {k: v.astype(np.float32) if v.dtype.kind == "f" else v
          for k, v in sd.items()}


def _numpy_bert_sentence(sd, config, ids, mask):
  """Independent float64 reference: HF BertModel + mean pooling + L2 norm."""
  g = lambda k: sd[k].astype(np.float64)
  erf = np.vectorize(math.erf)

  def ln(x, prefix):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + config.layer_norm_eps) * g(
        prefix + ".weight") + g(prefix + ".bias")

  def linear(x, prefix):
    return x @ g(prefix + ".weight").T + g(prefix + ".bias")

  b, length = ids.shape
  nh, dh = config.num_attention_heads, config.head_dim
  x = (g("embeddings.word_embeddings.weight")[ids]
       + g("embeddings.position_embeddings.weight")[np.arange(length)][None]
       + g("embeddings.token_type_embeddings.weight")[np.zeros_like(ids)])
  x = ln(x, "embeddings.LayerNorm")
  for i in range(config.num_hidden_layers):
    p = f"encoder.layer.{i}."
    heads = lambda t: t.reshape(b, length, nh, dh).transpose(0, 2, 1, 3)
    q, k, v = (heads(linear(x, p + f"attention.self.{n}"))
               for n in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
    s = np.where(mask[:, None, None, :] > 0, s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(0, 2, 1, 3).reshape(b, length, -1)
    x = ln(x + linear(ctx, p + "attention.output.dense"),
           p + "attention.output.LayerNorm")
    hmid = linear(x, p + "intermediate.dense")
    hmid = 0.5 * hmid * (1 + erf(hmid / math.sqrt(2)))
    x = ln(x + linear(hmid, p + "output.dense"), p + "output.LayerNorm")
  m = mask[..., None].astype(np.float64)
  e = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
  return e / np.linalg.norm(e, axis=-1, keepdims=True)


def test_sentence_bert_matches_float64_numpy_reference():
  sd = _random_state_dict(TINY)
  params = bert_weights.bert_params_from_state_dict(sd, TINY)
  ids = np.array([[2, 5, 9, 3, 0, 0, 0], [2, 30, 31, 32, 33, 34, 3],
                  [2, 3, 0, 0, 0, 0, 0]])
  mask = (np.arange(7)[None] < np.array([[4], [7], [2]])).astype(np.int32)
  got = SentenceBert(TINY, precision="highest").apply(
      {"params": {"bert": params}}, jnp.asarray(ids), jnp.asarray(mask))
  want = _numpy_bert_sentence(sd, TINY, ids, mask)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, rtol=0)


def test_padding_does_not_change_the_embedding():
  sd = _random_state_dict(TINY, seed=1)
  variables = {"params": {"bert": bert_weights.bert_params_from_state_dict(
      sd, TINY)}}
  model = SentenceBert(TINY, precision="highest")
  ids = jnp.array([[2, 7, 8, 3]])
  short = model.apply(variables, ids, jnp.ones_like(ids))
  padded_ids = jnp.pad(ids, ((0, 0), (0, 12)))
  padded_mask = jnp.pad(jnp.ones_like(ids), ((0, 0), (0, 12)))
  long = model.apply(variables, padded_ids, padded_mask)
  np.testing.assert_allclose(np.asarray(long), np.asarray(short), atol=1e-6)


def test_params_tree_matches_flax_init_structure():
  ids = jnp.zeros((1, 4), jnp.int32)
  init = BertEncoder(TINY).init(jax.random.key(0), ids, jnp.ones_like(ids))
  loaded = bert_weights.bert_params_from_state_dict(_random_state_dict(TINY),
                                                    TINY)
  shapes = lambda t: jax.tree.map(np.shape, t)
  assert shapes(init["params"]) == shapes(loaded)


def test_linear_weights_are_transposed_and_layernorm_renamed():
  sd = _random_state_dict(TINY)
  p = bert_weights.bert_params_from_state_dict(sd, TINY)
  np.testing.assert_array_equal(
      p["layer_1"]["intermediate"]["kernel"],
      sd["encoder.layer.1.intermediate.dense.weight"].T)
  np.testing.assert_array_equal(
      p["layer_0"]["attention_layer_norm"]["scale"],
      sd["encoder.layer.0.attention.output.LayerNorm.weight"])
  np.testing.assert_array_equal(
      p["embeddings"]["word_embeddings"]["embedding"],
      sd["embeddings.word_embeddings.weight"])


def test_bert_prefix_and_gamma_beta_names_are_accepted():
  sd = _random_state_dict(TINY)
  renamed = {}
  for k, v in sd.items():
    k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta")
    renamed["bert." + k] = v
  renamed["cls.predictions.bias"] = np.zeros(3, np.float32)  # task head
  a = bert_weights.bert_params_from_state_dict(sd, TINY)
  b = bert_weights.bert_params_from_state_dict(renamed, TINY)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.mark.parametrize("edit, match", [
    (lambda sd: sd.pop("encoder.layer.1.output.dense.bias"), "lacks 1"),
    (lambda sd: sd.update({"encoder.layer.0.intermediate.dense.weight":
                           np.zeros((20, 11), np.float32)}), "shape"),
    (lambda sd: sd.update({"encoder.layer.5.output.dense.bias":
                           np.zeros(12, np.float32)}), "num_hidden_layers"),
    (lambda sd: sd.update({"decoder.weight": np.zeros(3)}), "unexpected"),
])
def test_bad_checkpoints_raise(edit, match):
  sd = _random_state_dict(TINY)
  edit(sd)
  with pytest.raises(ValueError, match=match):
    bert_weights.bert_params_from_state_dict(sd, TINY)


def test_load_bert_params_reads_safetensors(tmp_path):
  from safetensors.numpy import save_file
  sd = _random_state_dict(TINY)
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()},
            str(tmp_path / "model.safetensors"))
  loaded = bert_weights.load_bert_params(str(tmp_path / "model.safetensors"),
                                         TINY)
  np.testing.assert_array_equal(loaded["layer_0"]["attention"]["key"]["kernel"],
                                sd["encoder.layer.0.attention.self.key.weight"].T)
  with pytest.raises(ValueError, match="model.safetensors"):
    bert_weights.load_bert_params(str(tmp_path / "absent.safetensors"), TINY)


@pytest.mark.parametrize("change, match", [
    ({"model_type": "roberta"}, "model_type"),
    ({"position_embedding_type": "relative_key"}, "absolute"),
    ({"num_attention_heads": 5}, "divisible"),
    ({"hidden_act": "swish"}, "hidden_act"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
])
def test_config_rejects_unsupported_models(change, match):
  d = {"vocab_size": 10, "hidden_size": 12, "num_hidden_layers": 1,
       "num_attention_heads": 3, "intermediate_size": 8, "model_type": "bert"}
  d.update(change)
  with pytest.raises(ValueError, match=match):
    BertConfig.from_dict(d)


def test_config_from_json_ignores_extra_keys(tmp_path):
  path = tmp_path / "config.json"
  path.write_text(json.dumps({
      "vocab_size": 10, "hidden_size": 12, "num_hidden_layers": 1,
      "num_attention_heads": 3, "intermediate_size": 8, "model_type": "bert",
      "architectures": ["BertModel"], "use_cache": True}))
  c = BertConfig.from_json_file(str(path))
  assert (c.hidden_size, c.head_dim, c.layer_norm_eps) == (12, 4, 1e-12)


def test_sequence_longer_than_positions_raises():
  ids = jnp.zeros((1, TINY.max_position_embeddings + 1), jnp.int32)
  with pytest.raises(ValueError, match="max_position_embeddings"):
    BertEncoder(TINY).init(jax.random.key(0), ids, jnp.ones_like(ids))


def test_dropout_is_active_only_when_not_deterministic():
  ids = jnp.array([[2, 5, 6, 3]])
  model = SentenceBert(TINY)
  v = model.init(jax.random.key(0), ids, jnp.ones_like(ids))
  a = model.apply(v, ids, jnp.ones_like(ids))
  b = model.apply(v, ids, jnp.ones_like(ids), deterministic=False,
                  rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(np.asarray(a),
                                np.asarray(model.apply(v, ids, jnp.ones_like(ids))))


def test_mean_pool_matches_numpy_and_handles_empty_rows():
  rng = np.random.default_rng(0)
  h = rng.normal(size=(3, 5, 4))
  mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
  got = np.asarray(mean_pool(jnp.asarray(h, jnp.float32), jnp.asarray(mask)))
  np.testing.assert_allclose(got[0], h[0, :2].mean(0), atol=1e-6)
  np.testing.assert_allclose(got[1], h[1].mean(0), atol=1e-6)
  np.testing.assert_array_equal(got[2], np.zeros(4))
  with pytest.raises(ValueError, match="attention_mask"):
    mean_pool(jnp.zeros((2, 3, 4)), jnp.zeros((2, 4)))


def test_length_buckets():
  assert length_buckets(256) == (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
  assert length_buckets(128)[-1] == 128
  assert length_buckets(5) == (5,)
  assert length_buckets(20) == (8, 16, 20)
  with pytest.raises(ValueError, match="max_length"):
    length_buckets(0)


def test_plan_batches_covers_each_input_once_in_bucket_shapes():
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 257, size=1000)
  buckets = length_buckets(256)
  batches = plan_batches(lengths, 64, buckets)
  seen = np.concatenate([b.indices for b in batches])
  np.testing.assert_array_equal(np.sort(seen), np.arange(1000))
  for b in batches:
    assert b.length in buckets and b.length >= lengths[b.indices].max()
    assert len(b.indices) <= b.rows <= 64
  # Only the last batch may be partial; it is padded to a power of two.
  assert all(b.rows == 64 for b in batches[:-1])
  assert len(batches[-1].indices) == 1000 % 64 == 40 and batches[-1].rows == 64
  assert len({(b.rows, b.length) for b in batches}) <= len(buckets) + 1


def test_plan_batches_tail_rows_and_errors():
  batches = plan_batches([3] * 5, 64, (8,))
  assert [(len(b.indices), b.rows) for b in batches] == [(5, 8)]
  assert plan_batches([], 4, (8,)) == []
  with pytest.raises(ValueError, match="largest bucket"):
    plan_batches([9], 4, (8,))
  with pytest.raises(ValueError, match="batch_size"):
    plan_batches([3], 0, (8,))
