"""Tests for itr_jax.training.optimizer against hand-written NumPy Adam."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from itr_jax.training import optimizer as opt_lib


def optim_config(**overrides):
  fields = dict(learning_rate=5e-4, grad_clip=2.0, lr_update=3, lr_decay=0.1)
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def np_reference(grads_per_step, lr_at, clip, b1=0.9, b2=0.999, eps=1e-8):
  """Official recipe in float64: clip_grad_norm_ then torch Adam."""
  m = v = 0.0
  updates = []
  for t, g in enumerate(grads_per_step, start=1):
    g = np.float64(g)
    norm = np.sqrt(np.sum(g ** 2))
    if clip and norm > clip:
      g = g * clip / norm
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g ** 2
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    updates.append(-lr_at(t - 1) * m_hat / (np.sqrt(v_hat) + eps))
  return updates


def test_schedule_matches_official_epoch_formula():
  steps_per_epoch, lr_update = 7, 3
  schedule = opt_lib.learning_rate_schedule(
      optim_config(lr_update=lr_update), steps_per_epoch)
  for step in range(0, 100):
    epoch = step // steps_per_epoch
    want = 5e-4 * 0.1 ** (epoch // lr_update)  # official adjust_learning_rate
    np.testing.assert_allclose(schedule(step), want, rtol=1e-6)
  # Boundaries by hand: epochs 0-2 -> 5e-4, epochs 3-5 -> 5e-5, 6 -> 5e-6.
  values = [float(schedule(s)) for s in (0, 20, 21, 41, 42)]
  np.testing.assert_allclose(values, [5e-4, 5e-4, 5e-5, 5e-5, 5e-6], rtol=1e-6)


def test_schedule_without_decay_is_constant():
  schedule = opt_lib.learning_rate_schedule(optim_config(lr_decay=1.0), 5)
  np.testing.assert_allclose([schedule(s) for s in (0, 15, 1000)], 5e-4,
                             rtol=1e-6)


@pytest.mark.parametrize("scale", [10.0, 0.01])  # clipping active / inactive
def test_optimizer_matches_numpy_clip_then_adam(scale):
  steps_per_epoch = 2
  config = optim_config(learning_rate=1e-2, lr_update=1, lr_decay=0.5)
  tx = opt_lib.create_optimizer(config, steps_per_epoch)
  rng = np.random.default_rng(0)
  grads = [scale * rng.normal(size=5) for _ in range(5)]
  params = {"w": jnp.zeros(5)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  got = []
  for g in grads:
    u, state = update({"w": jnp.float32(g)}, state, params)
    got.append(u["w"])
  lr_at = lambda step: 1e-2 * 0.5 ** (step // steps_per_epoch)
  for g, w in zip(got, np_reference(grads, lr_at, clip=2.0)):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-9)


def test_clipping_happens_before_adam_on_the_global_norm():
  tx = opt_lib.create_optimizer(optim_config(), steps_per_epoch=1)
  params = {"a": jnp.zeros(3), "b": {"c": jnp.zeros((2, 2))}}
  grads = {"a": jnp.array([3.0, 0.0, 4.0]), "b": {"c": jnp.full((2, 2), 6.0)}}
  _, state = tx.update(grads, tx.init(params), params)
  adam = next(s for s in state if isinstance(s, optax.ScaleByAdamState))
  # After one step Adam's first moment is (1 - b1) * (the gradient it saw).
  seen = jax.tree.map(lambda m: m / 0.1, adam.mu)
  norm = 13.0  # sqrt(3^2 + 4^2 + 4 * 6^2), over the whole tree
  np.testing.assert_allclose(optax.tree.norm(seen), 2.0, rtol=1e-5)
  np.testing.assert_allclose(seen["a"], grads["a"] * 2.0 / norm, rtol=1e-5)
  np.testing.assert_allclose(seen["b"]["c"], grads["b"]["c"] * 2.0 / norm,
                             rtol=1e-5)
  # A small gradient is left alone; grad_clip=0 disables clipping.
  small = jax.tree.map(lambda g: g / 100, grads)
  _, state = tx.update(small, tx.init(params), params)
  adam = next(s for s in state if isinstance(s, optax.ScaleByAdamState))
  np.testing.assert_allclose(adam.mu["a"] / 0.1, small["a"], rtol=1e-5)
  tx = opt_lib.create_optimizer(optim_config(grad_clip=0), steps_per_epoch=1)
  _, state = tx.update(grads, tx.init(params), params)
  adam = next(s for s in state if isinstance(s, optax.ScaleByAdamState))
  np.testing.assert_allclose(adam.mu["a"] / 0.1, grads["a"], rtol=1e-5)


def test_per_module_learning_rate_multiplier():
  params = {"image_encoder": {"fc": {"kernel": jnp.zeros(2)}},
            "text_encoder": {"gru": {"kernel": jnp.zeros(2)}}}
  grads = jax.tree.map(lambda p: jnp.array([1.0, -2.0]), params)
  base = opt_lib.create_optimizer(optim_config(), 4)
  scaled = opt_lib.create_optimizer(
      optim_config(lr_multipliers={"text_encoder": 0.1}), 4)
  state_b, state_s = base.init(params), scaled.init(params)
  for _ in range(3):
    u_b, state_b = base.update(grads, state_b, params)
    u_s, state_s = scaled.update(grads, state_s, params)
  np.testing.assert_allclose(u_s["image_encoder"]["fc"]["kernel"],
                             u_b["image_encoder"]["fc"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(u_s["text_encoder"]["gru"]["kernel"],
                             0.1 * u_b["text_encoder"]["gru"]["kernel"],
                             rtol=1e-6)
  bad = opt_lib.create_optimizer(
      optim_config(lr_multipliers={"txt_encoder": 0.1}), 4)
  with pytest.raises(ValueError, match="txt_encoder"):
    bad.init(params)


@pytest.mark.parametrize("config,steps,match", [
    (ml_collections.ConfigDict(dict(optim=optim_config())), 1, "config.optim"),
    (optim_config(lr_schedule="step"), 1, "lr_schedule"),
    (optim_config(), 0, "steps_per_epoch"),
    (optim_config(learning_rate=0.0), 1, "learning_rate"),
    (optim_config(lr_update=0), 1, "lr_update"),
    (optim_config(lr_decay=0.0), 1, "lr_decay"),
    (optim_config(grad_clip=-1.0), 1, "grad_clip"),
    (optim_config(lr_multipliers={"text_encoder": -1.0}), 1, "lr_multipliers"),
])
def test_bad_arguments_raise(config, steps, match):
  with pytest.raises(ValueError, match=match):
    opt_lib.create_optimizer(config, steps)
