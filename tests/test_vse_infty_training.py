"""VSE-infinity's training pieces: size augmentation, AdamW, BatchNorm state, exact resume."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from itr_jax import losses
from itr_jax.models import vse_infty
from itr_jax.training import augment, checkpointing, defaults, optimizer
from itr_jax.training import train_step as train_step_lib
from itr_jax.training import trainer


# ---- size augmentation against NumPy transcriptions of the official loops ----

def _np_drop_regions(images, u, p):
  """Official PrecompRegionDataset + collate: image[rand > p], zero-padded."""
  out, mask = np.zeros_like(images), np.zeros(images.shape[:2], bool)
  for b in range(images.shape[0]):
    kept = images[b][u[b] > p]
    if len(kept) == 0:  # itr_jax's guard (the official code would fail)
      kept = images[b]
    out[b, :len(kept)] = kept
    mask[b, :len(kept)] = True
  return out, mask


@pytest.mark.parametrize("p", [0.2, 0.6, 0.999999])
def test_drop_regions_matches_official_loop(p):
  key = jax.random.key(3)
  images = np.random.default_rng(0).normal(size=(16, 7, 3)).astype(np.float32)
  got_images, got_mask = augment.drop_regions(key, jnp.asarray(images), p)
  u = np.asarray(jax.random.uniform(key, images.shape[:2]))
  want_images, want_mask = _np_drop_regions(images, u, p)
  np.testing.assert_array_equal(got_mask, want_mask)
  np.testing.assert_array_equal(got_images, want_images)


def _np_augment_tokens(tokens, lengths, u, random_ids, p, mask_id, keep_ends,
                       continuation):
  """The official process_caption on ids: per word, mask / random / delete."""
  out_tokens, out_lengths = np.zeros_like(tokens), np.zeros_like(lengths)
  for b in range(tokens.shape[0]):
    n = lengths[b]
    kept = []
    word_u = None
    for i in range(n):
      tok = tokens[b, i]
      if continuation is None or i == 0 or not continuation[tok]:
        word_u = u[b, i]
      eligible = not keep_ends or 0 < i < n - 1
      prob = word_u
      if eligible and prob < p:
        prob /= p
        if prob < 0.5:
          kept.append(mask_id)
        elif prob < 0.6:
          kept.append(random_ids[b, i])
        # else: deleted
      else:
        kept.append(tok)
    if not kept:
      kept = list(tokens[b, :n])
    out_tokens[b, :len(kept)] = kept
    out_lengths[b] = len(kept)
  return out_tokens, out_lengths


@pytest.mark.parametrize("wordpiece", [False, True])
@pytest.mark.parametrize("p", [0.2, 0.9])
def test_augment_tokens_matches_official_loop(wordpiece, p):
  rng = np.random.default_rng(1)
  batch, length, num_ids = 32, 9, 20
  lengths = rng.integers(1, length + 1, batch).astype(np.int32)
  tokens = rng.integers(1, num_ids, (batch, length)).astype(np.int32)
  tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
  continuation = (np.arange(num_ids) % 3 == 0) if wordpiece else None
  key = jax.random.key(5)
  got_tokens, got_lengths = augment.augment_tokens(
      key, jnp.asarray(tokens), jnp.asarray(lengths), prob=p, mask_id=num_ids - 1,
      num_ids=num_ids, keep_ends=wordpiece,
      continuation=None if continuation is None else jnp.asarray(continuation))
  u_key, id_key = jax.random.split(key)
  u = np.asarray(jax.random.uniform(u_key, tokens.shape))
  random_ids = np.asarray(jax.random.randint(id_key, tokens.shape, 0, num_ids, jnp.int32))
  want_tokens, want_lengths = _np_augment_tokens(
      tokens, lengths, u, random_ids, p, num_ids - 1, wordpiece, continuation)
  np.testing.assert_array_equal(got_lengths, want_lengths)
  np.testing.assert_array_equal(got_tokens, want_tokens)
  assert (got_lengths < lengths).any()  # something was deleted


def test_augmentation_rates_and_purity():
  """Rates are the official 20% (x 50/10/40%); draws depend only on (seed, step)."""
  cfg = ml_collections.ConfigDict(dict(region_drop=0.2, caption_tokens=0.2))
  fn = augment.make_augment(cfg, seed=7, mask_id=99, num_ids=100)
  batch = {"images": jnp.ones((400, 36, 2)),
           "tokens": jnp.full((400, 40), 5, jnp.int32),
           "lengths": jnp.full((400,), 40, jnp.int32)}
  out = jax.jit(fn)(batch, jnp.int32(3))
  assert abs(float(out["region_mask"].mean()) - 0.8) < 0.01
  assert abs(float(out["lengths"].mean()) / 40 - (1 - 0.2 * 0.4)) < 0.01
  masked = float((out["tokens"] == 99).sum()) / (400 * 40)
  assert abs(masked - 0.2 * 0.5) < 0.01
  again = fn(batch, jnp.int32(3))
  other = fn(batch, jnp.int32(4))
  np.testing.assert_array_equal(again["tokens"], out["tokens"])
  assert not np.array_equal(other["tokens"], out["tokens"])
  assert augment.make_augment(ml_collections.ConfigDict(
      dict(region_drop=0.0, caption_tokens=0.0)), seed=0) is None


@pytest.mark.parametrize("fields, match", [
    (dict(region_drop=1.0), "region_drop must be a probability"),
    (dict(caption_tokens=-0.1), "caption_tokens must be a probability"),
    (dict(regions=0.2), "Unknown config.train.augment"),
])
def test_augment_config_errors(fields, match):
  with pytest.raises(ValueError, match=match):
    augment.check_config(ml_collections.ConfigDict(fields))


def test_caption_augmentation_adds_a_mask_word():
  c = defaults.vse_infty_recipe(defaults.base_config())
  c.model.word_dim, c.model.embed_size = 4, 8
  assert trainer.build_model(c, 10).vocab_size == 11  # <mask> = id 10
  c.train.augment.caption_tokens = 0.0
  assert trainer.build_model(c, 10).vocab_size == 10


# ---- AdamW against a float64 NumPy transcription of torch.optim.AdamW ----

def _np_adamw(params, grads_seq, lr, wd, clip, mult):
  """clip_grad_norm_ + AdamW per parameter group lr (PyTorch's update order)."""
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v2 = {k: np.zeros_like(v) for k, v in p.items()}
  for t, grads in enumerate(grads_seq, start=1):
    norm = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads.values()))
    scale = min(1.0, clip / (norm + 1e-6))
    for k in p:
      g = grads[k] * scale
      group_lr = lr * mult.get(k, 1.0)
      p[k] = p[k] * (1 - group_lr * wd)
      m[k] = 0.9 * m[k] + 0.1 * g
      v2[k] = 0.999 * v2[k] + 0.001 * g * g
      m_hat, v_hat = m[k] / (1 - 0.9 ** t), v2[k] / (1 - 0.999 ** t)
      p[k] = p[k] - group_lr * m_hat / (np.sqrt(v_hat) + 1e-8)
  return p


def test_adamw_matches_pytorch_adamw_transcription():
  rng = np.random.default_rng(0)
  params = {"image_encoder": rng.normal(size=(3, 2)).astype(np.float32),
            "sentence_bert": rng.normal(size=(4,)).astype(np.float32)}
  grads_seq = [{k: rng.normal(size=v.shape).astype(np.float32) * 3
                for k, v in params.items()} for _ in range(4)]
  cfg = ml_collections.ConfigDict(dict(
      learning_rate=0.05, grad_clip=2.0, lr_update=10, lr_decay=0.1,
      lr_multipliers={"sentence_bert": 0.1}, name="adamw", weight_decay=0.01))
  tx = optimizer.create_optimizer(cfg, steps_per_epoch=100)
  state, p = tx.init(params), {k: jnp.asarray(v) for k, v in params.items()}
  for grads in grads_seq:
    updates, state = tx.update({k: jnp.asarray(g) for k, g in grads.items()}, state, p)
    p = optax.apply_updates(p, updates)
  want = _np_adamw(params, grads_seq, 0.05, 0.01, 2.0, {"sentence_bert": 0.1})
  for k in params:
    np.testing.assert_allclose(p[k], want[k], rtol=1e-5, atol=1e-6)


def test_optimizer_config_errors_and_unchanged_adam_state():
  base = dict(learning_rate=5e-4, grad_clip=2.0, lr_update=10, lr_decay=0.1)
  for fields, match in [(dict(name="sgd"), "optim.name must be one of"),
                        (dict(weight_decay=0.01), "needs config.optim.name='adamw'"),
                        (dict(name="adamw", weight_decay=-1.0), "weight_decay must be >= 0")]:
    with pytest.raises(ValueError, match=match):
      optimizer.create_optimizer(ml_collections.ConfigDict({**base, **fields}), 10)
  # Adam's state keeps its structure (old checkpoints restore).
  params = {"w": jnp.ones(2)}
  old = optimizer.create_optimizer(ml_collections.ConfigDict(base), 10).init(params)
  new = optimizer.create_optimizer(ml_collections.ConfigDict(
      {**base, "name": "adam", "weight_decay": 0.0}), 10).init(params)
  assert jax.tree.structure(old) == jax.tree.structure(new)


# ---- the train step: BatchNorm state, augmentation, exact resume ----

@pytest.fixture(scope="module")
def tiny_vse_infty():
  """(config, model, fresh state on the host, augment, one-device train step)
  of a tiny VSE-infinity run; the tests share the step's compilation."""
  c = defaults.vse_infty_recipe(defaults.base_config())
  c.model.word_dim, c.model.embed_size = 4, 8
  c.optim.lr_update = 1
  c.data.max_len = 7
  model = trainer.build_model(c, 12)
  tx = optimizer.create_optimizer(c.optim, steps_per_epoch=3)
  split = type("Split", (), {"num_regions": 5, "feature_dim": 6})()
  # jit: one compile (eager init compiles every primitive).
  state = jax.jit(lambda: trainer.create_train_state(c, model, tx, split))()
  aug = augment.make_augment(c.train.augment, seed=c.seed, mask_id=12, num_ids=13)
  step = train_step_lib.make_train_step(model, losses.LossOptions.from_config(c.loss),
                                        augment=aug)
  return c, model, jax.device_get(state), aug, step


def _batch(i, size=8):
  r = np.random.default_rng(i)
  return {"images": r.normal(size=(size, 5, 6)).astype(np.float32),
          "tokens": r.integers(1, 12, (size, 7)).astype(np.int32),
          "lengths": r.integers(3, 8, size).astype(np.int32),
          "image_caption_emb": r.normal(size=(size, 2, 3)).astype(np.float32),
          "caption_emb": r.normal(size=(size, 3)).astype(np.float32)}


def test_train_step_updates_batch_stats_and_resumes_exactly(tmp_path, tiny_vse_infty):
  _, model, first, _, step = tiny_vse_infty
  assert isinstance(first, train_step_lib.TrainState) and first.model_state
  copy = lambda s: jax.device_put(s, jax.devices()[0])
  s = copy(first)
  for i in range(4):
    s, metrics = step(s, _batch(i))
  assert np.isfinite(float(metrics["loss"]))
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), first.model_state,
                       jax.tree.map(np.asarray, s.model_state))
  assert all(jax.tree.leaves(moved))  # running mean and var updated

  # Interrupted after 2 steps, checkpointed, restored, continued.
  r = copy(first)
  for i in range(2):
    r, _ = step(r, _batch(i))
  ckpt = checkpointing.Checkpoints(str(tmp_path), keep=2)
  ckpt.save(2, r)
  restored = ckpt.restore(2, jax.eval_shape(lambda: first))
  ckpt.close()
  for i in range(2, 4):
    restored, _ = step(restored, _batch(i))
  for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Evaluation uses the running statistics: the encoders take the variables.
  emb = jax.jit(lambda v, x: model.apply(v, x, method="encode_images"))(
      s.variables(), jnp.asarray(_batch(0)["images"]))
  assert emb.shape == (8, 8)


def test_sharded_train_step_equals_one_device(tiny_vse_infty):
  """BatchNorm statistics and augmentation draws over a batch split on 4 devices."""
  from itr_jax import sharding  # pylint: disable=import-outside-toplevel
  c, model, first, aug, single = tiny_vse_infty
  options = losses.LossOptions.from_config(c.loss)
  mesh = sharding.create_mesh((("data", -1),), devices=jax.devices()[:4])
  shardings = sharding.state_shardings(jax.eval_shape(lambda: first), mesh, c.sharding)
  sharded = train_step_lib.make_train_step(model, options, augment=aug, mesh=mesh,
                                           state_sharding=shardings)
  a = jax.device_put(first, jax.devices()[0])
  b = jax.device_put(first, shardings)
  for i in range(2):
    a, _ = single(a, _batch(i))
    b, _ = sharded(b, sharding.global_batch(_batch(i), mesh))
  compared = 0
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    name = jax.tree_util.keystr(path)
    if name == ".params['image_encoder']['mlp']['fc1']['bias']":
      # The bias before BatchNorm has a zero gradient up to rounding noise,
      # which Adam scales to +-lr: it differs with any change of summation order.
      continue
    # That bias shifts BatchNorm's batch mean (and nothing after the BN):
    # the running mean inherits 0.1 x its difference.
    atol = 0.1 * 2 * 2 * c.optim.learning_rate if name.endswith("['mean']") else 2e-6
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=atol,
                               err_msg=name)
    compared += 1
  assert compared > 40


def test_vse_infty_configs():
  for tower in ("", ",bert"):
    for variant, weight in (("sndcg", 0.5), ("triplet", 0.0), ("sndcg_only", 1.0)):
      c = defaults.paper_vse_infty_config("test", variant + tower)
      assert (c.model.name, c.loss.weight, c.train.num_epochs, c.optim.lr_update,
              c.train.warmup_epochs) == ("vse_infty", weight, 25, 15, 1)
      assert c.model.text_tower == (tower[1:] or "gru")
      assert c.optim.weight_decay == (1e-4 if tower else 0.01)
  with pytest.raises(ValueError, match="text tower"):
    defaults.paper_vse_infty_config("test", "sndcg,lstm")
  assert isinstance(trainer.build_model(
      defaults.paper_vse_infty_config("test", "sndcg"), 50), vse_infty.VSEInftyModel)


@pytest.mark.parametrize("name", ["itr_jax.models.region_mlp", "itr_jax.models.vse_infty",
                                  "itr_jax.models.vse_infty_torch",
                                  "itr_jax.training.augment"])
def test_doctests(name):
  import doctest  # pylint: disable=import-outside-toplevel
  import importlib  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(importlib.import_module(name),
                           optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.attempted > 0 and result.failed == 0


def test_wordpiece_mask_and_word_continuations():
  from itr_jax.data import wordpiece_vocab  # pylint: disable=import-outside-toplevel
  vocab = wordpiece_vocab.WordPieceVocabulary()
  mask_id, continuation = vocab.mask_and_continuation()
  assert mask_id == 103  # [MASK] in the uncased BERT vocabulary
  ids, lengths = vocab.encode_batch(["snowboarding"], max_len=8)
  pieces = ids[0, 1:lengths[0] - 1]
  assert len(pieces) > 1 and not continuation[pieces[0]] and continuation[pieces[1:]].all()
