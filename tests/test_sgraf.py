"""SGRAF (SGR / SAF) against the official PyTorch code, and the scorer plumbing.

The reference values come from tests/fixtures/make_sgraf_reference.py (the
official Paranioar/SGRAF model.py run on tiny random weights); no PyTorch here.
"""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from itr_jax import losses
from itr_jax import models
from itr_jax import relevance as relevance_lib
from itr_jax.evaluation import similarity as similarity_lib
from itr_jax.models import scorer
from itr_jax.models import sgraf
from itr_jax.models import sgraf_weights
from itr_jax.sharding import mesh as mesh_lib
from itr_jax.training import defaults
from itr_jax.training import train_step as train_step_lib

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "sgraf_reference.npz")
SIZES = dict(vocab_size=20, word_dim=6, embed_size=16, sim_dim=8)


@pytest.fixture(scope="module")
def ref():
  with np.load(FIXTURE) as f:
    return dict(f)


def _official(ref, module):
  state = {k.split("/param/")[1]: v for k, v in ref.items() if k.startswith(f"{module}/param/")}
  return state, sgraf_weights.variables_from_torch(state, module)


def assert_trees_close(got, want, rtol=1e-5, atol_scale=1e-6):
  """Leaves equal to rtol, or to atol_scale x the largest |leaf| of `want`:
  gradients that are 0 in theory (a bias before a BatchNorm or a softmax)
  hold rounding noise on both sides."""
  atol = atol_scale * max(float(np.max(np.abs(w))) for w in jax.tree.leaves(want))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), got, want)


def _model(module, **kw):
  return sgraf.SGRAF(module=module, **{**SIZES, **kw})


def _inputs(ref):
  return (jnp.asarray(ref["images"]), jnp.asarray(ref["tokens"]),
          jnp.asarray(ref["lengths"]))


@pytest.mark.parametrize("module", ["sgr", "saf"])
def test_eval_scores_match_official(ref, module):
  _, variables = _official(ref, module)
  scores = jax.jit(_model(module).apply)(variables, *_inputs(ref))  # jit: 1/3 of eager's CPU
  np.testing.assert_allclose(scores, ref[f"{module}/eval_scores"], rtol=2e-5, atol=2e-6)


def _train_loss(model, batch_stats, images, tokens, lengths, weights):
  def loss(params):
    variables = {"params": params, "batch_stats": batch_stats}
    img, cap, variables = scorer.encode(model, variables, images, tokens, lengths, train=True)
    scores, aux = scorer.similarity(model, variables, img, cap, train=True, chunk_size=2)
    return jnp.sum(scores * weights), (
        scores, scorer.merge_similarity_state(model, variables, aux)["batch_stats"])
  return loss


@pytest.mark.parametrize("module", ["sgr", "saf"])
def test_train_mode_scores_grads_and_running_stats_match_official(ref, module):
  state, variables = _official(ref, module)
  model = _model(module, dropout_rate=0.0)  # the fixture disabled dropout
  loss = _train_loss(model, variables["batch_stats"], *_inputs(ref),
                     jnp.asarray(ref["loss_weights"]))
  grads, (scores, new_stats) = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  np.testing.assert_allclose(scores, ref[f"{module}/train_scores"], rtol=2e-5, atol=2e-6)
  # Running statistics after the forward pass (PyTorch: unbiased variance,
  # SAF updated once per caption).
  buffers = {k.split("/train_buffer/")[1]: v for k, v in ref.items()
             if k.startswith(f"{module}/train_buffer/")}
  want_stats = sgraf_weights.variables_from_torch({**state, **buffers}, module)["batch_stats"]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               new_stats, want_stats)
  torch_grads = {k.split("/grad/")[1]: v for k, v in ref.items() if k.startswith(f"{module}/grad/")}
  want = sgraf_weights.variables_from_torch({**state, **torch_grads}, module)["params"]
  flat_want = dict(jax.tree_util.tree_flatten_with_path(want)[0])
  checked = 0
  # Some gradients are exactly 0 in theory (e.g. the graph key bias: softmax
  # is shift-invariant); both sides then hold rounding noise ~1e-10.
  scale = max(float(np.max(np.abs(g))) for g in flat_want.values())
  for path, got in jax.tree_util.tree_flatten_with_path(grads)[0]:
    np.testing.assert_allclose(got, flat_want[path], rtol=1e-4, atol=1e-6 * scale,
                               err_msg=jax.tree_util.keystr(path))
    checked += 1
  assert checked == len(flat_want) and checked > 20


def test_padding_never_changes_scores(ref):
  _, variables = _official(ref, "saf")
  images, tokens, lengths = _inputs(ref)
  apply = jax.jit(_model("saf").apply)
  longer = jnp.pad(tokens, ((0, 0), (0, 5)), constant_values=3)  # garbage past lengths
  np.testing.assert_allclose(apply(variables, images, longer, lengths),
                             apply(variables, images, tokens, lengths), rtol=1e-6)


def test_running_stats_merge_is_sequential_ema():
  stats = {"SAF_module": {"bn_mean": jnp.array([0.5]), "bn_var": jnp.array([2.0])}}
  aux = {"saf_mean": jnp.array([1.0, 2.0, 3.0]), "saf_var": jnp.array([1.0, 1.0, 4.0])}
  got = sgraf.SGRAF.merge_similarity_stats(stats, aux)["SAF_module"]
  mean, var = 0.5, 2.0
  for m, v in zip([1.0, 2.0, 3.0], [1.0, 1.0, 4.0]):
    mean, var = 0.9 * mean + 0.1 * m, 0.9 * var + 0.1 * v
  np.testing.assert_allclose([got["bn_mean"][0], got["bn_var"][0]], [mean, var], rtol=1e-6)


# --------------------------------------------------------------------------
# Scorer plumbing: chunked training scores, sharded loss, blocked evaluation.


def _tiny(module, batch=8, regions=4, length=6, seed=0):
  model = sgraf.SGRAF(module=module, vocab_size=12, word_dim=4, embed_size=8, sim_dim=4,
                      score_chunk=2)
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.normal(size=(batch, regions, 5)), jnp.float32)
  lengths = jnp.asarray(rng.integers(1, length + 1, size=batch), jnp.int32)
  tokens = jnp.asarray(rng.integers(1, 12, size=(batch, length)), jnp.int32)
  # jit: one compile; eager init / encode compile every primitive (~10x the CPU).
  variables = jax.jit(model.init)(jax.random.key(0), images, tokens, lengths)
  sent = rng.normal(size=(batch, 3, 7)).astype(np.float32)
  batch_dict = {"images": images, "tokens": tokens, "lengths": lengths,
                "image_caption_emb": jnp.asarray(sent), "caption_emb": jnp.asarray(sent[:, 0])}
  return model, variables, batch_dict


# The chunking is model-agnostic (scorer.similarity): SAF covers it in the
# default run, SGR only with -m slow.
@pytest.mark.parametrize("module", [pytest.param("sgr", marks=pytest.mark.slow), "saf"])
def test_chunked_scores_equal_one_shot_values_and_grads(module):
  model, variables, b = _tiny(module)
  img, cap, _ = jax.jit(lambda v, x, t, n: scorer.encode(model, v, x, t, n, train=True,
                                                        rng=jax.random.key(1)))(
      variables, b["images"], b["tokens"], b["lengths"])
  cap_mask = cap.pop("mask")

  # Chunking acts after the encoders: gradients equal with respect to the
  # parameters and to the image / caption representations mean (chain rule)
  # equal gradients of the encoder parameters too, without compiling the
  # encoders' backward pass twice.
  def total(params, img, cap, chunk):
    v = {**variables, "params": params}
    scores, _ = scorer.similarity(model, v, img, {**cap, "mask": cap_mask}, train=True,
                                  chunk_size=chunk)
    return jnp.sum(jnp.sin(3 * scores))

  grad_fn = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2)), static_argnums=3)
  value, grads = grad_fn(variables["params"], img, cap, 0)
  value3, grads3 = grad_fn(variables["params"], img, cap, 3)  # -> chunks of 2
  np.testing.assert_allclose(value3, value, rtol=1e-6)
  assert_trees_close(grads3, grads)
  assert all(np.any(g != 0) for g in jax.tree.leaves(grads[1:]))  # reaches the encoders


@pytest.mark.parametrize("module", ["sgr", "saf"])
def test_sharded_scorer_loss_equals_one_device(module):
  model, variables, b = _tiny(module)
  options = losses.LossOptions.from_config(defaults.base_config().loss)
  rng = jax.random.key(3)

  def run(mesh):
    def loss(params):
      return train_step_lib.batch_loss(
          model, {**variables, "params": params}, b, options=options, mesh=mesh, rng=rng)
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  (want_loss, (want_aux, want_stats)), want_grads = run(None)
  mesh = mesh_lib.create_mesh([("data", -1)], devices=jax.devices()[:8])
  (loss, (aux, stats)), grads = run(mesh)
  assert jax.device_count() >= 8
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  for k in want_aux:
    np.testing.assert_allclose(aux[k], want_aux[k], rtol=1e-5, atol=1e-6, err_msg=k)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6),
               stats, want_stats)
  # float32 sums in another order (8 devices): noise ~1e-5 of the largest entry.
  assert_trees_close(grads, want_grads, rtol=2e-4, atol_scale=1e-5)
  # And the one-device loss is the plain listwise loss of the full score matrix.
  v = {**variables}
  img, cap, _ = scorer.encode(model, v, b["images"], b["tokens"], b["lengths"], train=True,
                              rng=rng)
  scores, _ = scorer.similarity(model, v, img, cap, train=True)
  direct, _ = losses.listwise_itr_loss(
      scores, relevance_lib.rsc(b["image_caption_emb"], b["caption_emb"]),
      options)
  np.testing.assert_allclose(want_loss, direct, rtol=1e-5)


def test_blocked_evaluation_scores_equal_direct_scores():
  model, variables, b = _tiny("saf", batch=11)

  @jax.jit  # one compile (eager: every primitive)
  def direct(variables, b):
    img = model.apply(variables, b["images"], method="encode_images")
    cap = model.apply(variables, b["tokens"], b["lengths"], method="encode_texts")
    return img, cap, model.apply(variables, img, cap, method="similarity")[0]

  img, cap, want = direct(variables, b)
  mesh = mesh_lib.create_mesh([("data", -1)], devices=jax.devices()[:4])
  got = similarity_lib.similarity_matrix(
      model, variables, jax.tree.map(np.asarray, img), jax.tree.map(np.asarray, cap),
      mesh=mesh, image_block=4, caption_block=6, progress=False)  # ragged blocks
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(similarity_lib.ensemble(got, 1 - got), 0.5, atol=1e-7)


def test_registry_builds_each_backbone_and_rejects_bad_names():
  config = defaults.base_config().model
  config.vocab_size = 10
  assert isinstance(models.create_model(config), models.VSEModel)
  for name in ("sgr", "saf"):
    config.name = name
    built = models.create_model(config)
    assert isinstance(built, sgraf.SGRAF) and built.module == name
    assert not scorer.is_two_tower(built)
  config.name = "sgraf"
  with pytest.raises(ValueError, match="model.name must be one of"):
    models.create_model(config)
  config.name = "sgr"
  config.text_tower = "bert"
  with pytest.raises(ValueError, match="BiGRU"):
    models.create_model(config)
  with pytest.raises(ValueError, match="Unknown config.model field"):
    models.create_model(ml_collections.ConfigDict(dict(name="sgr", vocab_size=3, sim_dims=4)))
  with pytest.raises(ValueError, match="fixed number of regions"):
    _model("sgr").init(jax.random.key(0), jnp.ones((1, 3, 4)), method="encode_images",
                       region_mask=jnp.ones((1, 3), bool))


@pytest.mark.parametrize("name", ["itr_jax.models.sgraf", "itr_jax.models.scorer",
                                  "itr_jax.models.registry", "itr_jax.models.sgraf_weights",
                                  "itr_jax.evaluation.similarity"])
def test_docstring_examples(name):
  import doctest  # pylint: disable=import-outside-toplevel
  import importlib  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(importlib.import_module(name), extraglobs={"jax": jax, "jnp": jnp},
                           optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0


def _load_config(name, *args):
  import importlib.util  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(__file__), "..", "configs", name)
  spec = importlib.util.spec_from_file_location(name[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


@pytest.mark.parametrize("dataset, module, epochs, decay", [
    ("f30k", "sgr", 40, 30), ("f30k", "saf", 30, 20), ("coco", "sgr", 20, 10),
    ("coco", "saf", 20, 10)])
def test_paper_configs_carry_the_official_recipe(dataset, module, epochs, decay):
  for variant, weight in (("sndcg", 0.5), ("triplet", 0.0), ("sndcg_only", 1.0)):
    c = _load_config(f"{dataset}_{module}.py", variant)
    assert (c.model.name, c.loss.weight) == (module, weight)
    assert (c.train.num_epochs, c.optim.lr_update, c.optim.lr_decay) == (epochs, decay, 0.1)
    assert (c.optim.learning_rate, c.train.batch_size, c.optim.grad_clip, c.loss.margin,
            c.train.warmup_epochs) == (2e-4, 128, 2.0, 0.2, 0)
    assert (c.model.bidirectional, c.model.embed_size, c.model.sim_dim, c.model.word_dim,
            c.model.sgr_steps, c.model.smooth) == (True, 1024, 256, 300, 3, 9.0)
    assert c.data.test_split == ("testall" if dataset == "coco" else "test")
  with pytest.raises(ValueError, match="sndcg_only"):
    _load_config(f"{dataset}_{module}.py", "listwise")
  demo = _load_config("synthetic_scenes_sgraf.py", module)
  assert demo.model.name == module and demo.data.name == "synthetic_scenes"


def test_population_refuses_cross_attention_backbones_before_writing(tmp_path):
  from itr_jax.sweeps import population  # pylint: disable=import-outside-toplevel
  config = defaults.base_config()
  config.model.name = "saf"
  member = population.members_lib.Member(index=0, name="a", workdir=str(tmp_path / "a"),
                                         overrides={})
  with pytest.raises(ValueError, match="two-tower backbones only"):
    population.train_population(config, [member])
  assert not os.path.exists(member.workdir)
