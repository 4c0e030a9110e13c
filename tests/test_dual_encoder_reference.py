"""CLIP / SigLIP towers, weights importers and losses against the reference
implementations (transformers' CLIPModel / SiglipModel; fixtures made by
tests/fixtures/make_dual_encoder_reference.py): embeddings, logits and the
models' own training losses to float32 precision, for every import path."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from itr_jax import losses
from itr_jax.models import dual_encoder
from itr_jax.models import dual_encoder_weights as weights_lib
from itr_jax.tools import torch_pickle

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "dual_encoder")


def fixture(name):
  return os.path.join(FIXTURES, name)


def load_hf(family):
  directory = fixture(f"{family}_hf")
  with open(os.path.join(directory, "config.json")) as f:
    config = json.load(f)
  return weights_lib.from_hf(safetensors.numpy.load_file(
      os.path.join(directory, "model.safetensors")), config)


def load_openai_zip():
  return weights_lib.from_openai(torch_pickle.load(fixture("clip_openai.pt")),
                                 vision_heads=2, text_heads=2)


def load_openai_safetensors(tmp_path):
  path = str(tmp_path / "clip_openai.safetensors")
  safetensors.numpy.save_file(
      {k: np.ascontiguousarray(v) for k, v in torch_pickle.load(fixture("clip_openai.pt")).items()},
      path)
  return weights_lib.from_openai(safetensors.numpy.load_file(path), vision_heads=2, text_heads=2)


def load_big_vision():
  return weights_lib.from_big_vision(dict(np.load(fixture("siglip_big_vision.npz"))))


@functools.lru_cache(None)
def encoder(arch_items):
  """jitted (params, images, tokens, lengths) -> (img, txt) for one architecture."""
  model = dual_encoder.DualEncoder(dual_encoder.DualEncoderConfig(**dict(arch_items)).check())
  return model, jax.jit(lambda p, *x: model.apply({"params": p}, *x))


def check_against_reference(family, arch, params):
  ref = np.load(fixture(f"{family}_reference.npz"))
  model, apply = encoder(tuple(sorted(arch.items())))
  weights_lib.check_fits(params, model, "the imported weights")
  img, txt = apply(params, ref["images"], ref["tokens"], ref["lengths"])
  np.testing.assert_allclose(img, ref["image_emb"], atol=2e-6, rtol=1e-5)
  np.testing.assert_allclose(txt, ref["text_emb"], atol=2e-6, rtol=1e-5)
  logits = dual_encoder.logit_params(params)
  t = np.exp(logits["logit_scale"])
  logits_per_image = t * (img @ txt.T) + logits.get("logit_bias", 0.0)
  np.testing.assert_allclose(logits_per_image, ref["logits_per_image"], atol=1e-5, rtol=1e-5)
  # The reference model's own training loss (CLIP: symmetric CE; SigLIP: sigmoid).
  kind = "infonce" if family == "clip" else "sigmoid"
  loss = losses.pairwise_loss(img @ txt.T, kind, **logits)
  np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)


def test_clip_hf_safetensors():
  arch, params = load_hf("clip")
  assert arch["family"] == "clip" and arch["act"] == "quick_gelu" and arch["vision_heads"] == 2
  check_against_reference("clip", arch, params)


def test_clip_openai_torch_zip_and_safetensors(tmp_path):
  hf_arch, _ = load_hf("clip")
  for arch, params in (load_openai_zip(), load_openai_safetensors(tmp_path)):
    assert arch == {**hf_arch, "pad_id": 0}
    check_against_reference("clip", arch, params)


def test_siglip_hf_safetensors():
  arch, params = load_hf("siglip")
  assert arch["family"] == "siglip" and arch["act"] == "gelu_tanh" and arch["pad_id"] == 1
  check_against_reference("siglip", arch, params)


def test_siglip_big_vision_npz():
  arch, params = load_big_vision()
  assert arch == load_hf("siglip")[0]
  check_against_reference("siglip", arch, params)


def test_siglip_pooling_ignores_batch_padding():
  """The model pads to the context length itself: a batch padded shorter gives the same."""
  arch, params = load_hf("siglip")
  ref = np.load(fixture("siglip_reference.npz"))
  _, apply = encoder(tuple(sorted(arch.items())))
  short = int(ref["lengths"][:3].max())
  _, txt = apply(params, ref["images"][:3], ref["tokens"][:3, :short], ref["lengths"][:3])
  np.testing.assert_allclose(txt, ref["text_emb"][:3], atol=2e-6)


def test_bfloat16_compute_keeps_float32_params():
  arch, params = load_hf("clip")
  ref = np.load(fixture("clip_reference.npz"))
  model = dual_encoder.DualEncoder(dual_encoder.DualEncoderConfig(**arch), dtype=jnp.bfloat16)
  img, txt = jax.jit(lambda p, *x: model.apply({"params": p}, *x))(
      params, ref["images"], ref["tokens"], ref["lengths"])
  assert img.dtype == jnp.float32
  np.testing.assert_allclose(img, ref["image_emb"], atol=0.05)
  np.testing.assert_allclose(txt, ref["text_emb"], atol=0.05)


def test_mismatches_are_one_sentence_each():
  arch, params = load_hf("clip")
  model, _ = encoder(tuple(sorted({**arch, "vision_layers": 3}.items())))
  with pytest.raises(ValueError, match=r"block_2.* is missing from the imported weights\."):
    weights_lib.check_fits(params, model, "the imported weights")
  state = torch_pickle.load(fixture("clip_openai.pt"))
  del state["visual.ln_pre.bias"]
  with pytest.raises(ValueError, match="has no 'visual.ln_pre.bias'"):
    weights_lib.from_openai(state)
  state = dict(np.load(fixture("siglip_big_vision.npz")))
  state["params/img/pos_embedding"] = state["params/img/pos_embedding"][0]
  with pytest.raises(ValueError, match="has shape .* expected 3 dimensions"):
    weights_lib.from_big_vision(state)
  state = dict(np.load(fixture("siglip_big_vision.npz")))
  state["params/extra"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match="does not use"):
    weights_lib.from_big_vision(state)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_tokenizer_ids_match_reference(family):
  from itr_jax.text_encoders import clip_tokenizers  # pylint: disable=import-outside-toplevel
  ref = np.load(fixture(f"{family}_reference.npz"))
  tok = clip_tokenizers.load_tokenizer(fixture(f"{family}_hf"), family, ref["tokens"].shape[1])
  tokens, lengths = tok([str(c) for c in ref["captions"]])
  np.testing.assert_array_equal(lengths, ref["lengths"])
  for row, want, n in zip(tokens, ref["tokens"], lengths):
    np.testing.assert_array_equal(row[:n], want[:n])
  if family == "siglip":  # padded with </s>, as the reference
    np.testing.assert_array_equal(tokens, ref["tokens"])
  else:  # OpenAI pads with 0 (transformers with the end token; the model never reads it)
    assert all((row[n:] == 0).all() for row, n in zip(tokens, lengths))
  assert lengths.max() == tokens.shape[1]  # the long caption was cut, end token kept
  assert tokens[lengths.argmax(), -1] == (tok.eot if family == "clip" else tok.eos)


def test_tokenizer_bad_files(tmp_path):
  from itr_jax.text_encoders import clip_tokenizers  # pylint: disable=import-outside-toplevel
  bad = tmp_path / "spiece.model"
  bad.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="is not a SentencePiece model"):
    clip_tokenizers.load_tokenizer(str(bad), "siglip", 16)
  with pytest.raises(ValueError, match="does not exist"):
    clip_tokenizers.load_tokenizer(str(tmp_path), "clip", 16)


def test_clip_tokenizer_from_open_clip_bpe_gz(tmp_path):
  """open_clip's bpe_simple_vocab_16e6.txt.gz layout (header line + merges) gives the same ids."""
  import gzip  # pylint: disable=import-outside-toplevel
  from itr_jax.text_encoders import clip_tokenizers  # pylint: disable=import-outside-toplevel
  with open(fixture("clip_hf/merges.txt"), encoding="utf-8") as f:
    merges = f.read().split("\n", 1)[1]
  path = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
  path.write_bytes(gzip.compress(("\"bpe_simple_vocab_16e6.txt#version: 0.2\n" + merges).encode()))
  ref = np.load(fixture("clip_reference.npz"))
  tokens, lengths = clip_tokenizers.load_tokenizer(str(path), "clip", 16)(
      [str(c) for c in ref["captions"]])
  np.testing.assert_array_equal(lengths, ref["lengths"])
  np.testing.assert_array_equal(np.where(tokens > 0, tokens, ref["tokens"]), ref["tokens"])
