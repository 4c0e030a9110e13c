"""CLIP / SigLIP (tiny) train steps: InfoNCE / sigmoid + S-NDCG, one device
and sharded over 8 simulated devices (data parallel and FSDP) give the same
loss and update (the triplet's sharded path is the one tests/test_sharding.py
covers; tests/test_contrastive_losses.py checks every term sharded); per-tower learning rates and the decay mask reach the update."""
import functools
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from itr_jax import losses
from itr_jax import models
from itr_jax import sharding
from itr_jax.training import defaults
from itr_jax.training import optimizer as optimizer_lib
from itr_jax.training import train_step as train_step_lib
from itr_jax.training import trainer

BATCH = 8


def make_config(family, pairwise, weight=0.5):
  c = defaults.base_config()
  c.model.name, c.model.variant, c.model.vocab_size = family, "tiny", 30
  c.loss.pairwise, c.loss.weight = pairwise, weight
  c.data.max_len = 12
  c.optim.name, c.optim.weight_decay, c.optim.decay_mask = "adamw", 0.1, "matrices"
  c.optim.lr_multipliers = ml_collections.ConfigDict({"image_encoder": 0.5})
  return c


def batch():
  rng = np.random.default_rng(0)
  sent = rng.normal(size=(BATCH, 6)).astype(np.float32)
  lengths = rng.integers(3, 12, size=BATCH).astype(np.int32)
  tokens = (rng.integers(1, 30, size=(BATCH, 12)) * (np.arange(12) < lengths[:, None])).astype(np.int32)
  return {"images": rng.normal(size=(BATCH, 32, 32, 3)).astype(np.float32),
          "tokens": tokens, "lengths": lengths, "caption_emb": sent,
          "image_caption_emb": np.stack([sent, sent[::-1]], 1)}


def fresh_state(config, model, tx):
  """create_train_state under jit: one compile (eager init compiles every op)."""
  return jax.jit(lambda: trainer.create_train_state(config, model, tx,
                                                    types.SimpleNamespace()))()


_INITIAL = {}


def initial_state(config):
  """(model, host copy of the fresh SGD(1) state) of `config`, made once per
  model (the train steps donate their input state: device_put a copy)."""
  key = (config.model.name, config.model.variant, config.model.get("lit", False))
  if key not in _INITIAL:
    model = trainer.build_model(config, 30)
    # Plain SGD (lr 1): the update is the gradient (Adam's first step, -lr sign(g),
    # would turn rounding noise in near-zero gradients into full-size steps).
    _INITIAL[key] = model, jax.device_get(fresh_state(config, model, optax.sgd(1.0)))
  return _INITIAL[key]


def state_and_step(config, mesh=None, fsdp=False):
  model, state = initial_state(config)
  options = losses.LossOptions.from_config(config.loss)
  if mesh is None:
    return jax.device_put(state), train_step_lib.make_train_step(model, options)
  rules = sharding.FSDP_RULES if fsdp else ()
  shardings = sharding.tree_shardings(state, mesh, rules, min_size=256)
  state = jax.device_put(state, shardings)
  return state, train_step_lib.make_train_step(model, options, mesh=mesh,
                                               state_sharding=shardings)


@pytest.fixture(scope="module")
def mesh():
  return sharding.create_mesh([("data", -1)])


@pytest.mark.parametrize("family,pairwise,fsdp", [
    ("clip", "infonce", True), ("siglip", "sigmoid", False)])
def test_sharded_step_equals_single_device(mesh, family, pairwise, fsdp):
  config = make_config(family, pairwise)
  b = batch()
  state, step = state_and_step(config)
  old = jax.device_get(state.params)  # the step donates its input state
  new, metrics = step(state, b)
  sharded_state, sharded_step = state_and_step(config, mesh, fsdp)
  if fsdp:  # large leaves are split over the 8 devices
    kernel = sharded_state.params["image_encoder"]["encoder"]["block_0"]["mlp"]["fc1"]["kernel"]
    assert kernel.sharding.spec != jax.sharding.PartitionSpec()
  new_sharded, sharded_metrics = sharded_step(sharded_state, sharding.global_batch(b, mesh))
  for key in ("loss", "pairwise", "listwise", "ndcg_i2t"):
    np.testing.assert_allclose(sharded_metrics[key], metrics[key], rtol=2e-5, atol=1e-6)
  grads = jax.tree.map(lambda n, o: o - n, jax.device_get(new.params), old)
  sharded_grads = jax.tree.map(lambda n, o: o - n, jax.device_get(new_sharded.params), old)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6),
               grads, sharded_grads)
  assert np.isfinite(float(metrics["loss"])) and float(metrics["pairwise"]) > 0
  if pairwise != "triplet":  # the learnable temperature is trained
    assert float(grads["logit_scale"]) != 0.0


def test_triplet_loss_ignores_temperature_and_other_models_refuse_infonce():
  params = {"logit_scale": jnp.float32(1.0)}
  options = losses.LossOptions(pairwise="triplet")
  assert train_step_lib.logit_options(params, options) is options
  with pytest.raises(ValueError, match="needs a model with a learnable temperature"):
    train_step_lib.logit_options({"image_encoder": {}}, options.replace(pairwise="infonce"))


def test_decay_mask_and_tower_learning_rates():
  config = make_config("siglip", "sigmoid")
  params = initial_state(config)[1].params
  tx = optimizer_lib.create_optimizer(config.optim, steps_per_epoch=10)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(lambda p: tx.update(zeros, tx.init(p), p))(params)
  lr = config.optim.learning_rate
  # Zero gradients: the update is the decay alone, -lr * multiplier * wd * w.
  fc1 = ("encoder", "block_0", "mlp", "fc1")
  get = lambda tree, tower, path: _at(tree[tower], path)
  for tower, factor in (("image_encoder", 0.5), ("text_encoder", 1.0)):
    np.testing.assert_allclose(get(updates, tower, fc1 + ("kernel",)),
                               -lr * factor * 0.1 * get(params, tower, fc1 + ("kernel",)),
                               rtol=1e-5)
    assert not np.any(get(updates, tower, fc1 + ("bias",)))
    assert not np.any(get(updates, tower, ("pos_embed",)))
  assert not np.any(updates["text_encoder"]["token_embed"]["embedding"])
  assert float(updates["logit_scale"]) == 0.0


def _at(tree, path):
  for key in path:
    tree = tree[key]
  return np.asarray(tree)


def test_model_registry_builds_published_variants_abstractly():
  for family, variant, width in (("clip", "L/14", 1024), ("siglip", "So400m/14", 1152)):
    model = models.create_model(ml_collections.ConfigDict(dict(name=family, variant=variant)))
    assert model.arch.vision_width == width
  with pytest.raises(ValueError, match="not a clip variant"):
    models.create_model(ml_collections.ConfigDict(dict(name="clip", variant="So400m/14")))


def test_lit_step_runs_the_text_tower_on_cached_embeddings():
  """LiT loss on cached embeddings equals the full model's loss with the same towers."""
  config = make_config("clip", "infonce")
  b = batch()
  full, state = initial_state(config)
  params = state.params
  cached = jax.jit(lambda p, x: full.apply({"params": p}, x, method="encode_images"))(
      params, b["images"])
  config.model.lit = True
  lit = trainer.build_model(config, 30)
  lit_state = fresh_state(config, lit, optax.sgd(1.0))
  assert "image_encoder" not in lit_state.params
  lit_params = {k: v for k, v in params.items() if k != "image_encoder"}
  lit_state = lit_state.replace(params=lit_params)
  options = losses.LossOptions.from_config(config.loss)
  loss = lambda model, p, images: train_step_lib.batch_loss(
      model, {"params": p}, {**b, "images": images}, options=options)[0]
  np.testing.assert_allclose(jax.jit(functools.partial(loss, lit))(lit_params, cached),
                             jax.jit(functools.partial(loss, full))(params, b["images"]),
                             rtol=1e-5)
  new, metrics = train_step_lib.make_train_step(lit, options)(
      lit_state, {**b, "images": np.asarray(cached)})
  assert np.isfinite(float(metrics["loss"]))
