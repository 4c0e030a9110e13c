"""VSE-infinity against the official PyTorch code (tests/fixtures/vse_infty_reference.npz)."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from itr_jax import models
from itr_jax.models import vse_infty, vse_infty_torch

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures",
                       "vse_infty_reference.npz")


@pytest.fixture(scope="module")
def ref():
  return dict(np.load(FIXTURE))


def _state(ref, prefix):
  return {k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix)}


def _model(ref):
  return vse_infty.VSEInftyModel(
      vocab_size=ref["txt.embed.weight"].shape[0],
      word_dim=ref["txt.embed.weight"].shape[1],
      embed_size=ref["img.fc.weight"].shape[0])


def _inputs(ref):
  images = jnp.asarray(ref["images"])
  region_mask = models.vse_infty.length_mask(
      jnp.asarray(ref["image_lengths"]), images.shape[1])
  return images, jnp.asarray(ref["tokens"]), jnp.asarray(ref["lengths"]), region_mask


def _variables(ref):
  return jax.tree.map(jnp.asarray, vse_infty_torch.variables(
      _state(ref, "img."), _state(ref, "txt.")))


def test_converted_weights_fill_exactly_the_model_tree(ref):
  model = _model(ref)
  images, tokens, lengths, mask = _inputs(ref)
  # Shapes only: eval_shape compiles nothing.
  init = jax.eval_shape(model.init, jax.random.key(0), images, tokens, lengths, mask)
  shapes = lambda t: jax.tree.map(jnp.shape, t)
  assert shapes(_variables(ref)) == shapes(init)


def test_eval_embeddings_match_official(ref):
  """Eval mode: BatchNorm running statistics, GPO over each image's regions."""
  images, tokens, lengths, mask = _inputs(ref)
  # jit: one compile (eager execution compiles each primitive: many times the CPU).
  img, cap = jax.jit(_model(ref).apply)(_variables(ref), images, tokens, lengths, mask)
  np.testing.assert_allclose(img, ref["eval_img_emb"], atol=2e-6)
  np.testing.assert_allclose(cap, ref["eval_cap_emb"], atol=2e-6)


def _official_loss(img, cap, margin=0.2):
  """The official ContrastiveLoss(max_violation=True): a sum over the batch."""
  scores = img @ cap.T
  diag = jnp.diag(scores)
  eye = jnp.eye(scores.shape[0], dtype=bool)
  cost_s = jnp.where(eye, 0, jnp.maximum(margin + scores - diag[:, None], 0))
  cost_im = jnp.where(eye, 0, jnp.maximum(margin + scores - diag[None, :], 0))
  return cost_s.max(1).sum() + cost_im.max(0).sum()


def test_train_mode_embeddings_stats_and_gradients_match_official(ref):
  """Train mode: batch statistics over the padded batch, updated running stats, grads."""
  model = _model(ref)
  images, tokens, lengths, mask = _inputs(ref)
  variables = _variables(ref)

  def loss_fn(params):
    (img, cap), updates = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        images, tokens, lengths, mask, train=True, mutable=["batch_stats"])
    return _official_loss(img, cap), (img, cap, updates)

  (loss, (img, cap, updates)), grads = jax.jit(jax.value_and_grad(
      loss_fn, has_aux=True))(variables["params"])
  np.testing.assert_allclose(img, ref["train_img_emb"], atol=2e-6)
  np.testing.assert_allclose(cap, ref["train_cap_emb"], atol=2e-6)
  np.testing.assert_allclose(loss, ref["train_loss"], rtol=1e-5)
  bn = updates["batch_stats"]["image_encoder"]["mlp"]["bn1"]
  np.testing.assert_allclose(bn["mean"], ref["train_running_mean"], atol=1e-6)
  # PyTorch updates the running variance with the unbiased batch variance,
  # flax with the biased one: equal up to n/(n-1), n = B x (longest image).
  n = images.shape[0] * int(ref["image_lengths"].max())
  np.testing.assert_allclose(bn["var"], ref["train_running_var"], rtol=0.1 / (n - 1) + 1e-3)

  g_img, g_txt = grads["image_encoder"], grads["text_encoder"]
  pairs = {
      "grad.img.fc.weight": g_img["fc"]["kernel"].T,
      "grad.img.mlp.layers.0.weight": g_img["mlp"]["fc1"]["kernel"].T,
      "grad.img.mlp.bns.0.weight": g_img["mlp"]["bn1"]["scale"],
      "grad.img.mlp.layers.1.bias": g_img["mlp"]["fc2"]["bias"],
      "grad.img.gpool.linear.weight": g_img["gpo"]["score"]["kernel"].T,
      "grad.img.gpool.gru.weight_hh_l0": g_img["gpo"]["gru"]["forward"]["recurrent_kernel"].T,
      "grad.txt.embed.weight": g_txt["embed"]["embedding"],
      "grad.txt.rnn.weight_ih_l0": g_txt["gru"]["forward"]["input_kernel"].T,
      "grad.txt.rnn.bias_hh_l0_reverse": g_txt["gru"]["backward"]["recurrent_bias"],
      "grad.txt.gpool.gru.weight_ih_l0_reverse": g_txt["gpo"]["gru"]["backward"]["input_kernel"].T,
  }
  assert set(pairs) == {k for k in ref if k.startswith("grad.")}
  for key, value in pairs.items():
    scale = np.abs(ref[key]).max()
    assert scale > 0, key  # a gradient that is all zero would test nothing
    np.testing.assert_allclose(value, ref[key], atol=2e-5 * max(scale, 1), err_msg=key)


class _BertHead(nn.Module):
  """The BERT tower after BERT: the same helper VSEInftyBertTextEncoder calls."""
  embed_size: int

  @nn.compact
  def __call__(self, states, mask):
    return vse_infty.project_and_pool(states, mask, self.embed_size)


def test_bert_tower_head_matches_official(ref):
  """master's EncoderText after BERT: Linear(768, E) + GPO over lengths + l2norm.

  The fixture's BERT is a fixed table of token states (masked by x != 0,
  which equals the length mask here); itr_jax's BERT itself is checked by
  the MiniLM fixture.
  """
  state = _state(ref, "bert_txt.")
  tokens, lengths = ref["tokens"], ref["lengths"]
  mask = vse_infty.length_mask(jnp.asarray(lengths), tokens.shape[1])
  states = state["bert.table.weight"][tokens] * np.asarray(mask)[..., None]
  params = {"linear": vse_infty_torch.linear(state, "linear."),
            "gpo": vse_infty_torch.gpo(state, "gpool.")}
  out = jax.jit(_BertHead(ref["bert_txt.linear.weight"].shape[0]).apply)(
      {"params": params}, jnp.asarray(states), mask)
  np.testing.assert_allclose(out, ref["eval_bert_cap_emb"], atol=2e-6)


def test_bert_tower_param_layout_takes_pretrained_bert():
  from itr_jax.text_encoders import BertConfig
  c = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                 num_attention_heads=2, intermediate_size=16)
  model = vse_infty.VSEInftyModel(vocab_size=20, embed_size=4, text_tower="bert",
                                  bert_config=c)
  tokens, lengths = jnp.array([[2, 7, 3, 0], [2, 3, 0, 0]]), jnp.array([3, 2])
  # The layout only: eval_shape compiles nothing.
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((2, 3, 5)), tokens,
                             lengths)
  text = variables["params"]["text_encoder"]
  assert sorted(text) == ["gpo", "linear", "sentence_bert"]
  bert = jax.tree.map(lambda x: np.full(x.shape, 0.01, x.dtype),
                      text["sentence_bert"]["bert"])
  params = models.with_pretrained_bert(variables["params"], bert)
  assert float(params["text_encoder"]["sentence_bert"]["bert"]["embeddings"][
      "word_embeddings"]["embedding"][0, 0]) == pytest.approx(0.01)


def test_padding_and_batch_extent_do_not_leak(ref):
  """Eval embeddings ignore padded regions/words; train-mode BatchNorm sees
  padding only up to the batch's longest image (the official collate)."""
  model = _model(ref)
  images, tokens, lengths, mask = _inputs(ref)
  variables = _variables(ref)
  apply = jax.jit(model.apply)
  img, cap = apply(variables, images, tokens, lengths, mask)
  noisy_images = jnp.where(mask[..., None], images, 7.0)
  noisy_tokens = jnp.where(vse_infty.length_mask(lengths, tokens.shape[1]), tokens, 5)
  img2, cap2 = apply(variables, noisy_images, noisy_tokens, lengths, mask)
  np.testing.assert_allclose(img2, img, atol=1e-6)
  np.testing.assert_allclose(cap2, cap, atol=1e-6)
  # Extra all-padding region columns change nothing, in train mode either.
  wide = jnp.concatenate([images, jnp.zeros_like(images[:, :2])], axis=1)
  wide_mask = jnp.concatenate([mask, jnp.zeros_like(mask[:, :2])], axis=1)
  train = jax.jit(lambda x, m: model.apply(variables, x, tokens, lengths, m, train=True,
                                            mutable=["batch_stats"])[0][0])
  np.testing.assert_allclose(train(wide, wide_mask), train(images, mask), atol=1e-6)


def test_create_model_by_name():
  cfg = ml_collections.ConfigDict(dict(name="vse_infty", vocab_size=10, word_dim=3,
                                       embed_size=4, pooling="gpo", bidirectional=True))
  assert isinstance(models.create_model(cfg), vse_infty.VSEInftyModel)
  cfg.name = "vse"
  assert isinstance(models.create_model(cfg), models.VSEModel)
  cfg.name = "vse_infinity"
  with pytest.raises(ValueError, match="config.model.name must be one of"):
    models.create_model(cfg)
  cfg.name, cfg.pooling = "vse_infty", "max"
  with pytest.raises(ValueError, match="pooling='gpo'"):
    models.create_model(cfg)
