"""Sharding on 8 simulated CPU devices (tests/conftest.py sets XLA_FLAGS).

The global-batch loss and its gradients must equal the single-device loss on
meshes of 1, 2, 4 and 8 devices; train steps on 8 devices must give the
parameters of 1 device, with falling per-device memory; placement rules,
mesh construction, parallel encoding and multi-host flags are checked too.
Compiled train steps are shared through a module-scoped cache.
"""
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from itr_jax import losses
from itr_jax import models
from itr_jax import sharding
from itr_jax.evaluation import encode
from itr_jax.models import scorer
from itr_jax.relevance import rsc
from itr_jax.sharding import mesh as mesh_lib
from itr_jax.sharding import multihost
from itr_jax.sharding import partitioning
from itr_jax.training import defaults
from itr_jax.training import optimizer
from itr_jax.training import train_step as train_step_lib


def mesh_of(num_devices, axes=(("data", -1),)):
  return sharding.create_mesh(axes, devices=jax.devices()[:num_devices])


def test_eight_simulated_devices_are_available():
  assert jax.device_count() >= 8, "tests/conftest.py must set XLA_FLAGS first"


# --------------------------------------------------------------------------
# Mesh


def test_mesh_shape_resolves_minus_one_and_orders_batch_axes():
  assert mesh_lib.mesh_shape([("data", -1)], 8) == (8,)
  assert mesh_lib.mesh_shape([("data", 2), ("model", -1)], 8) == (2, 4)
  mesh = mesh_of(8, (("data", 2), ("fsdp", -1)))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4}
  assert sharding.batch_axes(mesh) == ("data", "fsdp")
  assert sharding.num_batch_shards(mesh) == 8
  mesh = mesh_of(8, [["data", -1], ["model", 2]])  # lists, as read back from JSON
  assert sharding.batch_axes(mesh) == ("data",)
  assert sharding.num_batch_shards(mesh) == 4


@pytest.mark.parametrize("axes, match", [
    ([("model", -1)], "batch axis"),
    ([("data", -1), ("data", 2)], "distinct"),
    ([("data", -1), ("model", -1)], "at most one -1"),
    ([("data", 3)], "8 are available"),
    ([("data", -1), ("model", 3)], "must divide"),
    ([("data", 0)], "positive"),
    ("data", "pairs"),
    ([], "empty"),
])
def test_bad_mesh_config_raises(axes, match):
  with pytest.raises(ValueError, match=match):
    sharding.create_mesh(axes)


def test_global_batch_splits_rows_and_refuses_uneven_batches():
  mesh = mesh_of(8)
  rows = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  batch = sharding.global_batch({"x": rows}, mesh)
  assert batch["x"].sharding.spec == PartitionSpec(("data",))
  assert [s.data.shape for s in batch["x"].addressable_shards] == [(2, 3)] * 8
  np.testing.assert_array_equal(np.asarray(batch["x"]), rows)
  with pytest.raises(ValueError, match=r"multiple of the 8 batch shards"):
    sharding.global_batch({"x": rows[:12]}, mesh)


# --------------------------------------------------------------------------
# Global-batch loss

B, E, C, D_S = 24, 6, 5, 7  # B = 24 is not a multiple of CHUNK
CHUNK = 7
LOSS_MODES = {
    "paper_tied_hardest": dict(t2i_relevance="paper", idcg="tied",
                               hardest=True, weight=0.5),
    "transpose_sorted_sum": dict(t2i_relevance="transpose", idcg="sorted",
                                 hardest=False, weight=0.3),
    # The O(B^2 log B) smooth ranks: each device sorts only its own rows.
    "paper_tied_hardest_sorted_ranks": dict(
        t2i_relevance="paper", idcg="tied", hardest=True, weight=0.5,
        rank_method="sorted"),
}
COMMON = dict(margin=0.2, tau=0.05, chunk_size=CHUNK)


@pytest.fixture(scope="module")
def loss_inputs():
  rng = np.random.default_rng(0)

  def unit(shape):
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)

  return (unit((B, E)), unit((B, E)),
          rng.standard_normal((B, C, D_S)).astype(np.float32),
          rng.standard_normal((B, D_S)).astype(np.float32))


def global_loss(img, cap, img_caps, caps, *, mesh=None, **options):
  """`sharding.global_batch_loss` of embeddings: (loss, aux)."""
  loss, aux, _ = sharding.global_batch_loss(
      scorer.dot_product_scores, None, img, cap, img_caps, caps,
      options=losses.LossOptions(**options), mesh=mesh)
  return loss, aux


def value_and_grads(loss_fn, inputs):
  """{mode: ((loss, aux), (d/d image_emb, d/d caption_emb))}, one compile."""
  img, cap, img_caps, caps = inputs

  def all_modes(i, c):
    return {name: jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        i, c, img_caps, caps, mode) for name, mode in LOSS_MODES.items()}

  return jax.jit(all_modes)(img, cap)


@pytest.fixture(scope="module")
def single_device_losses(loss_inputs):
  """Loss, aux and gradients of `listwise_itr_loss` per mode (the oracle)."""
  return value_and_grads(
      lambda i, c, img_caps, caps, mode: losses.listwise_itr_loss(
          i @ c.T, rsc(img_caps, caps), losses.LossOptions(**mode, **COMMON)), loss_inputs)


def sharded_losses(mesh, inputs):
  return value_and_grads(
      lambda i, c, img_caps, caps, mode: global_loss(
          i, c, img_caps, caps, mesh=mesh, **mode, **COMMON), inputs)


def assert_same_losses(got_by_mode, want_by_mode):
  assert set(got_by_mode) == set(LOSS_MODES)
  for name, want in want_by_mode.items():
    (loss, aux), grads = got_by_mode[name]
    (ref_loss, ref_aux), ref_grads = want
    np.testing.assert_allclose(loss, ref_loss, atol=1e-5, rtol=0, err_msg=name)
    assert set(aux) == set(ref_aux)
    for key in ref_aux:
      np.testing.assert_allclose(aux[key], ref_aux[key], atol=1e-5, rtol=0,
                                 err_msg=f"{name} {key}")
    for g, ref in zip(grads, ref_grads):
      assert np.abs(ref).max() > 1e-3  # a gradient that can fail the check
      np.testing.assert_allclose(g, ref, atol=1e-5, rtol=0, err_msg=name)


# 1 device (a one-device mesh) is covered by
# test_rsc_snap_false_reaches_the_sharded_loss_and_changes_tied_batches, a
# 4-way batch split by the ("data", 4) x ("model", 2) mesh below: each
# compiles the loss of every mode once more.
@pytest.mark.parametrize("num_devices", [2, 8])
def test_sharded_loss_and_gradients_equal_single_device(
    num_devices, loss_inputs, single_device_losses):
  """Both directions (in the loss and in aux), relevance and IDCG modes."""
  assert_same_losses(sharded_losses(mesh_of(num_devices), loss_inputs),
                     single_device_losses)


@pytest.mark.parametrize("axes", [(("data", 4), ("model", 2)),
                                  (("data", 2), ("fsdp", 4))])
def test_sharded_loss_on_two_axis_meshes(axes, loss_inputs, single_device_losses):
  assert_same_losses(sharded_losses(mesh_of(8, axes), loss_inputs),
                     single_device_losses)


def test_sorted_rank_method_gives_the_chunked_loss(single_device_losses):
  # Single-device oracle of the sorted mode vs the chunked kernel (float32).
  (loss, aux), grads = single_device_losses["paper_tied_hardest_sorted_ranks"]
  (ref_loss, ref_aux), ref_grads = single_device_losses["paper_tied_hardest"]
  np.testing.assert_allclose(loss, ref_loss, atol=1e-6, rtol=0)
  for key in ref_aux:
    np.testing.assert_allclose(aux[key], ref_aux[key], atol=1e-6, rtol=0)
  for g, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(g, ref, atol=1e-6, rtol=0)


def test_each_device_scores_only_its_rows(loss_inputs):
  """The 8-way program all-gathers embeddings and works on [B/8, B] blocks."""
  mesh = mesh_of(8)
  img, cap, img_caps, caps = loss_inputs
  hlo = jax.jit(lambda i, c: global_loss(
      i, c, img_caps, caps, mesh=mesh, chunk_size=CHUNK)).lower(img, cap).as_text()
  assert "all_gather" in hlo or "all-gather" in hlo
  assert re.search(rf"tensor<{B // 8}x{B}xf32>", hlo)
  assert not re.search(rf"tensor<{B}x{B}xf32>", hlo)


def test_local_loss_without_axis_is_the_batch_loss(loss_inputs):
  img, cap, img_caps, caps = (x[:5] for x in loss_inputs)
  loss, aux = jax.jit(lambda *a: global_loss(*a, tau=0.05))(img, cap, img_caps, caps)
  ref_loss, ref_aux = jax.jit(lambda i, c: losses.listwise_itr_loss(
      i @ c.T, rsc(img_caps, caps), losses.LossOptions(tau=0.05)))(img, cap)
  np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
  for key in ref_aux:
    np.testing.assert_allclose(aux[key], ref_aux[key], atol=1e-6, err_msg=key)


def test_sharded_loss_bad_arguments(loss_inputs):
  img, cap, img_caps, caps = loss_inputs
  mesh = mesh_of(8)
  with pytest.raises(ValueError, match="multiple of the 8 batch shards"):
    global_loss(img[:20], cap[:20], img_caps[:20], caps[:20], mesh=mesh)
  with pytest.raises(ValueError, match="t2i_relevance"):
    global_loss(img, cap, img_caps, caps, t2i_relevance="rows")
  with pytest.raises(ValueError, match="one row per local pair"):
    global_loss(img, cap, img_caps[:3], caps)
  with pytest.raises(ValueError, match="weight"):
    global_loss(img, cap, img_caps, caps, weight=1.5)


# --------------------------------------------------------------------------
# Placement rules


def test_fsdp_spec_shards_largest_divisible_dimension():
  mesh = mesh_of(8)
  spec = lambda shape, **kw: partitioning.fsdp_spec(shape, mesh, min_size=64, **kw)
  assert spec((300, 1024)) == PartitionSpec(None, "data")
  assert spec((1024, 300)) == PartitionSpec("data", None)
  assert spec((301, 16)) == PartitionSpec(None, "data")  # 301 % 8 != 0
  assert spec((301, 15)) == PartitionSpec()  # nothing divisible
  assert spec((4, 4)) == PartitionSpec()  # below min_size
  assert spec(()) == PartitionSpec()
  mesh2 = mesh_of(8, (("data", 2), ("fsdp", 4)))
  assert (partitioning.fsdp_spec((16, 8), mesh2, fsdp_axes=("data", "fsdp"), min_size=1)
          == PartitionSpec(("data", "fsdp"), None))
  with pytest.raises(ValueError, match="lacks"):
    partitioning.fsdp_spec((16, 8), mesh, fsdp_axes=("fsdp",))


def tiny_state(vocab_size=30):
  config = defaults.base_config()
  config.model.update(vocab_size=vocab_size, word_dim=8, embed_size=16)
  model = models.create_model(config.model)
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 3, 8)),
                               jnp.zeros((1, 6), jnp.int32),
                               jnp.full((1,), 2))["params"]
  tx = optimizer.create_optimizer(config.optim, steps_per_epoch=100)
  return config, model, train_step_lib.TrainState.create(
      apply_fn=model.apply, params=params, tx=tx)


def test_rules_place_params_and_their_adam_moments_alike(steps):
  state = steps.state
  mesh = mesh_of(8, (("data", 4), ("model", 2)))
  cfg = ml_collections.ConfigDict(dict(
      rules=(("image_encoder/.*kernel", (None, "model")), ("embed", "replicated"),
             (".*", "fsdp")),
      fsdp_axes=("data",), fsdp_min_size=128))
  shardings = sharding.state_shardings(jax.eval_shape(lambda: state), mesh, cfg)
  flat = {partitioning.path_name(p): s.spec for p, s in
          jax.tree_util.tree_flatten_with_path(shardings)[0]}
  kernel = [k for k in flat if k.startswith("params/image_encoder") and k.endswith("kernel")]
  assert kernel, sorted(flat)
  for name in kernel:
    assert flat[name] == PartitionSpec(None, "model")
    moments = [k for k in flat if k.startswith("opt_state") and k.endswith(name[7:])]
    assert len(moments) == 2 and all(flat[m] == flat[name] for m in moments), moments
  assert flat["step"] == PartitionSpec()
  embedding = [k for k in flat if k.startswith("params/") and "embed" in k]
  assert embedding and all(flat[k] == PartitionSpec() for k in embedding)
  assert any("data" in str(spec) for k, spec in flat.items()
             if k.startswith("params/text_encoder"))
  # Default: everything replicated.
  default = sharding.state_shardings(jax.eval_shape(lambda: state), mesh,
                                     defaults.base_config().sharding)
  assert all(s.spec == PartitionSpec() for s in jax.tree.leaves(default))


@pytest.mark.parametrize("rules, match", [
    ((("kernel", "shard"),), "must be 'replicated', 'fsdp'"),
    ((("(", "fsdp"),), "bad regex"),
    ((("kernel", ("data",)),), "one entry per dimension"),
    ((("kernel", (None, "tensor")),), "lacks"),
    ((("kernel", ("data", "model")),), "not divisible"),
    (("kernel",), "pairs"),
])
def test_bad_rules_raise(rules, match):
  mesh = mesh_of(8, (("data", 4), ("model", 2)))
  tree = {"kernel": jax.ShapeDtypeStruct((6, 16), jnp.float32)}
  with pytest.raises(ValueError, match=match):
    sharding.tree_shardings(tree, mesh, rules)


# --------------------------------------------------------------------------
# Train step on a mesh: same parameters as one device, falling memory

BATCH, REGIONS, FEATURES, TOKENS, STEPS = 64, 3, 8, 6, 3


def random_batch(rng):
  lengths = rng.integers(2, TOKENS + 1, BATCH).astype(np.int32)
  return {
      "images": rng.standard_normal((BATCH, REGIONS, FEATURES)).astype(np.float32),
      "tokens": rng.integers(1, 30, (BATCH, TOKENS)).astype(np.int32),
      "lengths": lengths,
      "image_caption_emb": rng.standard_normal((BATCH, C, D_S)).astype(np.float32),
      "caption_emb": rng.standard_normal((BATCH, D_S)).astype(np.float32),
  }


class CompiledSteps:
  """Train steps compiled once each and shared by the tests.

  `num_devices=None` is the plain single-device step (`make_train_step`
  without a mesh: the full-batch `listwise_itr_loss`), the reference.
  """

  def __init__(self):
    self.config, self.model, state = tiny_state()
    self.config.loss.tau = 0.05
    self.options = losses.LossOptions.from_config(self.config.loss)
    # On the host, so every run's device_put copies it (steps donate the state).
    self.state = jax.device_get(state)
    self.batches = [random_batch(np.random.default_rng(i)) for i in range(STEPS)]
    self._cache = {}

  def get(self, num_devices, rules=()):
    """(place_state, place_batch, compiled step)."""
    key = (num_devices, rules)
    if key not in self._cache:
      if num_devices is None:
        step = train_step_lib.make_train_step(self.model, self.options)
        place_state = lambda s: jax.device_put(s, jax.devices()[0])
        place_batch = lambda b: jax.device_put(b, jax.devices()[0])
      else:
        mesh = mesh_of(num_devices)
        cfg = ml_collections.ConfigDict(dict(rules=rules, fsdp_axes=("data",),
                                             fsdp_min_size=256))
        shardings = sharding.state_shardings(jax.eval_shape(lambda: self.state),
                                             mesh, cfg)
        step = train_step_lib.make_train_step(self.model, self.options,
                                              mesh=mesh, state_sharding=shardings)
        place_state = lambda s, shardings=shardings: jax.device_put(s, shardings)
        place_batch = lambda b, mesh=mesh: sharding.global_batch(b, mesh)
      compiled = step.lower(place_state(self.state),
                            place_batch(self.batches[0])).compile()
      self._cache[key] = (place_state, place_batch, compiled)
    return self._cache[key]

  def run(self, num_devices, rules=()):
    place_state, place_batch, compiled = self.get(num_devices, rules)
    state = place_state(self.state)
    metrics = []
    for batch in self.batches:
      state, m = compiled(state, place_batch(batch))
      metrics.append(m)
    return state, metrics

  def peak_bytes(self, num_devices, rules=()):
    return sharding.peak_bytes_per_device(self.get(num_devices, rules)[2])


@pytest.fixture(scope="module")
def steps():
  return CompiledSteps()


def assert_trees_close(a, b, atol):
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0,
                               err_msg=jax.tree_util.keystr(path))


def test_train_steps_on_eight_devices_match_one_device(steps):
  one, one_metrics = steps.run(None)
  eight, eight_metrics = steps.run(8)
  moved = max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
              for x, y in zip(jax.tree.leaves(one.params),
                              jax.tree.leaves(steps.state.params)))
  assert moved > 1e-3  # training changed the parameters
  assert_trees_close(eight.params, one.params, atol=1e-5)
  assert_trees_close(eight.opt_state, one.opt_state, atol=1e-5)
  assert all(x.sharding.is_fully_replicated for x in jax.tree.leaves(eight))
  for m1, m8 in zip(one_metrics, eight_metrics):
    for key in m1:
      np.testing.assert_allclose(m8[key], m1[key], atol=1e-5, err_msg=key)


def test_fsdp_rules_shard_state_and_train_the_same(steps):
  rules = sharding.FSDP_RULES
  fsdp, _ = steps.run(8, rules)
  specs = [x.sharding.spec for x in jax.tree.leaves(fsdp.params)]
  assert any(spec != PartitionSpec() for spec in specs)
  one, _ = steps.run(None)
  assert_trees_close(fsdp.params, one.params, atol=1e-5)
  assert steps.peak_bytes(8, rules) < steps.peak_bytes(8)


def test_per_device_memory_of_train_step_falls_with_devices(steps):
  peaks = [steps.peak_bytes(d) for d in (None, 2, 8)]  # 1, 2, 8 devices
  assert peaks[0] > peaks[1] > peaks[2], peaks
  assert peaks[2] < peaks[0] / 3, peaks


# --------------------------------------------------------------------------
# Parallel encoding


def test_encode_on_a_mesh_equals_single_device(steps):
  rng = np.random.default_rng(5)
  n = 10  # not a multiple of 8: padded, then cut
  images = rng.standard_normal((n, REGIONS, FEATURES)).astype(np.float32)
  tokens = rng.integers(1, 30, (n, TOKENS)).astype(np.int32)
  lengths = rng.integers(2, TOKENS + 1, n).astype(np.int32)
  mask = np.arange(n) < 9  # last row is padding
  image_batches = [{"images": images, "mask": mask}]
  caption_batches = [{"tokens": tokens, "lengths": lengths, "mask": mask}]
  params = jax.device_put(steps.state.params, jax.devices()[0])
  want = encode.encode_split(steps.model, params, image_batches, caption_batches)
  mesh = mesh_of(8)
  on_mesh = jax.device_put(steps.state.params, sharding.replicated(mesh))
  assert encode.params_mesh(on_mesh) is mesh
  got = encode.encode_split(steps.model, on_mesh, image_batches, caption_batches)
  for g, w in zip(got, want):
    assert g.shape == (9, 16)
    np.testing.assert_allclose(g, w, atol=1e-6)


# --------------------------------------------------------------------------
# Multi-host start-up (the 2-process run is in test_sharding_multiprocess.py)


@pytest.mark.parametrize("environ, expected", [
    ({}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, False),
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, True),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
    ({"TPU_WORKER_HOSTNAMES": "w0"}, False),
    ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, True),
])
def test_cluster_detection(environ, expected):
  assert multihost.cluster_detected(environ) is expected


def test_initialize_single_process_and_bad_flags(monkeypatch):
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(name, raising=False)
  assert multihost.initialize("off") is False
  assert multihost.initialize("auto") is False
  with pytest.raises(ValueError, match="--distributed"):
    multihost.initialize("yes")
  with pytest.raises(ValueError, match="--process_id=3"):
    multihost.initialize("on", coordinator_address="localhost:1", num_processes=2,
                         process_id=3)
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
    multihost.initialize("auto")
  assert multihost.main_process_first(lambda: 42) == 42


@pytest.mark.parametrize("name", ["mesh", "partitioning", "global_batch_loss",
                                  "memory", "multihost"])
def test_docstring_examples(name):
  import doctest  # pylint: disable=import-outside-toplevel
  import importlib  # pylint: disable=import-outside-toplevel
  module = importlib.import_module(f"itr_jax.sharding.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0, f"{name} has no examples"
  assert result.failed == 0


def test_batch_with_repeated_images_gives_the_same_loss_on_eight_devices():
  """Two captions of one image in a batch tie at relevance 1 in "tied" IDCG.

  Float rounding differs between 1 and 8 devices (matmul shapes), and without
  RSC's snapping to a fine grid that split the tie and moved NDCG by ~0.005.
  """
  rng = np.random.default_rng(3)
  b, c, d, e = 24, 5, 16, 8
  image_of_pair = rng.integers(0, 6, b)  # 24 pairs over 6 images: many repeats
  all_caps = rng.standard_normal((6, c, d)).astype(np.float32)
  image_caption_emb = all_caps[image_of_pair]
  caption_emb = all_caps[image_of_pair, rng.integers(0, c, b)]
  img = rng.standard_normal((b, e)).astype(np.float32)
  cap = rng.standard_normal((b, e)).astype(np.float32)
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  cap /= np.linalg.norm(cap, axis=1, keepdims=True)
  # jit: one compile each (eager execution compiles every primitive).
  want_loss, want = jax.jit(lambda i, c, ic, ce: losses.listwise_itr_loss(i @ c.T, rsc(ic, ce)))(
      img, cap, image_caption_emb, caption_emb)
  mesh = mesh_lib.create_mesh((("data", -1),), devices=jax.devices()[:8])
  got_loss, got = jax.jit(lambda *x: global_loss(*x, mesh=mesh))(
      img, cap, image_caption_emb, caption_emb)
  np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5)
  for key in want:
    np.testing.assert_allclose(float(got[key]), float(want[key]), rtol=1e-5, err_msg=key)


def test_rsc_snap_false_reaches_the_sharded_loss_and_changes_tied_batches():
  """Every pair of a batch of two images: unsnapped float rounding splits the
  tie between a caption of the same image (~0.99999994) and the positive (1),
  which moves the "tied" IDCG a lot; the sharded loss must see the same
  relevance as `rsc(..., snap=False)` on one device."""
  rng = np.random.default_rng(0)
  b, c, d, e = 8, 5, 384, 8
  image_of_pair = np.repeat([0, 1], 4)
  all_caps = rng.standard_normal((2, c, d)).astype(np.float32)
  image_caption_emb = all_caps[image_of_pair]
  caption_emb = all_caps[image_of_pair, rng.integers(0, c, b)]
  img = rng.standard_normal((b, e)).astype(np.float32)
  cap = rng.standard_normal((b, e)).astype(np.float32)
  mesh = mesh_of(1)
  by_snap = {}
  for snap in (True, False):
    # jit: one compile each (eager execution compiles every primitive).
    want_loss, want = jax.jit(lambda i, c, ic, ce: losses.listwise_itr_loss(
        i @ c.T, rsc(ic, ce, snap=snap)))(img, cap, image_caption_emb, caption_emb)  # pylint: disable=cell-var-from-loop
    got_loss, got = jax.jit(lambda *x: global_loss(*x, mesh=mesh, rsc_snap=snap))(  # pylint: disable=cell-var-from-loop
        img, cap, image_caption_emb, caption_emb)
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5)
    for key in want:
      np.testing.assert_allclose(float(got[key]), float(want[key]), rtol=1e-5,
                                 err_msg=f"snap={snap} {key}")
    by_snap[snap] = float(want["listwise"])
  assert abs(by_snap[True] - by_snap[False]) > 0.05, by_snap
