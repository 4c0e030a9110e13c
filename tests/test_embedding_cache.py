"""Cached image embeddings: evaluation does not re-encode unchanged images, and
LiT trains on the locked tower's cached embeddings (text tower + loss only)."""
import dataclasses
import doctest
import functools
import json
import os

import jax
import numpy as np
import optax
import pytest

from itr_jax import losses
from itr_jax.data import pipeline
from itr_jax.data import synthetic_pixels
from itr_jax.evaluation import embedding_cache as ec
from itr_jax.evaluation import encode
from itr_jax.evaluation import evaluate
from itr_jax.training import defaults
from itr_jax.training import experiment_data
from itr_jax.training import lit
from itr_jax.training import train_step as train_step_lib
from itr_jax.training import trainer

PARAMS = dict(seed=5, num_train=8, num_dev=4, num_test=0, caption_encoder="tfidf",
              emb_dim=8)


# ------------------------------------------------------------------ the cache

def test_entries_hit_miss_per_key_and_recompute_when_damaged(tmp_path):
  d, calls = str(tmp_path), []

  def compute(value):
    def run():
      calls.append(value)
      return np.full((3, 4), value, np.float32)
    return run

  params = {"w": np.ones((2, 2), np.float32)}
  key = ec.cache_key(params, {"size": 32}, {"split": "dev"})
  assert not ec.cached_array(d, "dev", key, compute(1.0))[1]
  emb, hit = ec.cached_array(d, "dev", key, compute(2.0))
  assert hit and emb[0, 0] == 1.0 and calls == [1.0]
  # Another tower, preprocessing or split is another entry: computed, never served stale.
  for changed in (ec.cache_key({"w": np.zeros((2, 2), np.float32)}, {"size": 32},
                               {"split": "dev"}),
                  ec.cache_key(params, {"size": 64}, {"split": "dev"}),
                  ec.cache_key(params, {"size": 32}, {"split": "test"})):
    emb, hit = ec.cached_array(d, "dev", changed, compute(3.0))
    assert not hit and emb[0, 0] == 3.0
  assert ec.cached_array(d, "dev", key, compute(9.0))[0][0, 0] == 1.0
  npy, sidecar = ec.entry_paths(d, "dev", key)
  meta = json.loads(open(sidecar, encoding="utf-8").read())  # pylint: disable=consider-using-with
  # A flipped byte (checksum), a truncated array, a sidecar of another key or of
  # garbage, a missing sidecar: recomputed and rewritten, then served again.
  damages = [lambda: _flip_last(npy), lambda: _truncate(npy),
             lambda: _write(sidecar, json.dumps({**meta, "key": {"other": 1}})),
             lambda: _write(sidecar, "\x00{garbage"), lambda: os.remove(sidecar)]
  for i, damage in enumerate(damages):
    damage()
    emb, hit = ec.cached_array(d, "dev", key, compute(10.0 + i))
    assert not hit and emb[0, 0] == 10.0 + i, i
    assert ec.cached_array(d, "dev", key, compute(99.0))[1]
  assert not [f for f in os.listdir(d) if ".tmp" in f]
  with pytest.raises(ValueError, match="letters, digits"):
    ec.cached_array(d, "../x", key, compute(0.0))
  assert ec.cached_array(None, "dev", key, compute(5.0))[1] is False


def test_entries_on_gcs(gcs):
  """Through the filesystem layer: an entry on gs:// is written, served, and
  recomputed when damaged."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  d = f"gs://{gcs.bucket}/embedding_cache"
  key = ec.cache_key({"w": np.ones(2, np.float32)}, {"size": 32}, {"split": "dev"})
  value = np.arange(6, dtype=np.float32).reshape(2, 3)
  assert not ec.cached_array(d, "dev", key, lambda: value)[1]
  emb, hit = ec.cached_array(d, "dev", key, lambda: 1 / 0)
  assert hit and np.array_equal(emb, value)
  npy, _ = ec.entry_paths(d, "dev", key)
  with tf.io.gfile.GFile(npy, "wb") as f:
    f.write(b"\x93NUMPY garbage")
  assert not ec.cached_array(d, "dev", key, lambda: value + 1)[1]
  assert np.array_equal(ec.cached_array(d, "dev", key, lambda: 1 / 0)[0], value + 1)


def test_init_from_leaves_out_the_locked_tower(tiny_run):
  """LiT fine-tunes from a checkpoint without taking its image tower (`ignore`)."""
  from itr_jax.training import init_from  # pylint: disable=import-outside-toplevel
  _, workdir, _, _ = tiny_run
  saved = init_from.restore_on_one_device(*init_from.resolve(workdir))["params"]
  names = sorted(saved)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = {"params": {k: jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), saved[k])
      for k in names[1:]}}
  with pytest.raises(ValueError, match="do not fit"):
    init_from.load_variables(workdir, abstract)
  loaded, _ = init_from.load_variables(workdir, abstract, ignore=(names[0],))
  assert sorted(loaded["params"]) == names[1:]
  for a, b in zip(jax.tree.leaves(loaded["params"]),
                  jax.tree.leaves({k: saved[k] for k in names[1:]})):
    np.testing.assert_array_equal(a, b)


def test_docstring_examples():
  for module in (ec, lit):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, module.__name__


def _flip_last(path):
  with open(path, "r+b") as f:
    f.seek(-1, 2)
    last = f.read(1)
    f.seek(-1, 2)
    f.write(bytes([last[0] ^ 0xFF]))


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 8)


def _write(path, text):
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


# ------------------------------------------------------- evaluation and LiT

@pytest.fixture(scope="module")
def pixel_config(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("lit_pixels"))
  synthetic_pixels.generate(root, image_size=32, **PARAMS)
  c = defaults.base_config()
  c.data.name, c.data.data_dir, c.data.pixels_size = "synthetic_pixels", root, 32
  c.data.synthetic.update(PARAMS)
  c.data.test_split, c.data.max_len, c.data.dev_max_images = "", 12, 0
  c.model.name, c.model.variant = "clip", "tiny"
  c.loss.pairwise, c.loss.weight = "infonce", 0.5
  c.train.batch_size, c.train.num_epochs, c.train.log_every_steps = 8, 1, 1
  c.train.checkpoint_every_steps = 1000
  c.eval.batch_size = 8
  c.optim.learning_rate = 1e-3
  return c


@pytest.fixture(scope="module")
def full_model(pixel_config):
  data = experiment_data.prepare(pixel_config, "unused")
  model = trainer.build_model(pixel_config, len(data.vocab))
  params = trainer.create_train_state(pixel_config, model, optax.identity(), data.train).params
  return data, model, params


@pytest.fixture
def count_image_encodings(monkeypatch):
  """Counts calls of the image encoder over a split (each encodes every image)."""
  calls = []
  original = encode.encode_images

  def counted(model, *args, **kwargs):
    calls.append(type(model).__name__)
    return original(model, *args, **kwargs)
  monkeypatch.setattr(encode, "encode_images", counted)
  return calls


def test_evaluation_reuses_image_embeddings_until_the_tower_changes(
    full_model, pixel_config, count_image_encodings, tmp_path):
  data, model, params = full_model
  calls, cache = count_image_encodings, str(tmp_path / "cache")
  run = functools.partial(evaluate.encode_eval_split, model, vocab=data.vocab,
                          config=pixel_config, cache_dir=cache)
  first, captions = run(params, split=data.dev)
  again, captions_again = run(params, split=data.dev)
  assert len(calls) == 1  # the second evaluation did not run the image tower
  np.testing.assert_array_equal(first, again)
  np.testing.assert_array_equal(captions, captions_again)
  uncached, _ = evaluate.encode_eval_split(model, params, data.dev, data.vocab, pixel_config)
  np.testing.assert_allclose(first, uncached, atol=1e-6)
  del calls[:]
  # A fine-tuned text tower keeps the image embeddings; a changed image tower,
  # preprocessing or split does not.
  text_changed = {**params, "text_encoder": jax.tree.map(lambda x: x + 1, params["text_encoder"])}
  run(text_changed, split=data.dev)
  assert not calls
  image_changed = {**params, "image_encoder": jax.tree.map(lambda x: x * 0.5,
                                                           params["image_encoder"])}
  run(image_changed, split=data.dev)
  assert len(calls) == 1
  images = data.dev.images
  other_mean = dataclasses.replace(data.dev, images=dataclasses.replace(
      images, preprocessing=dataclasses.replace(images.preprocessing, mean=(0.1, 0.2, 0.3))))
  run(params, split=other_mean)
  run(params, split=data.train)
  assert len(calls) == 3
  # A corrupted entry is recomputed (and equal to a fresh encoding).
  key = ec.cache_key(params["image_encoder"], ec.preprocessing_key(images.preprocessing),
                     ec.split_source(data.dev))
  _flip_last(ec.entry_paths(cache, "dev_images", key)[0])
  recomputed, _ = run(params, split=data.dev)
  assert len(calls) == 4
  np.testing.assert_array_equal(recomputed, first)


def test_a_multi_process_run_reads_the_cache_and_only_the_first_process_writes(
    full_model, count_image_encodings, monkeypatch, tmp_path):
  data, model, params = full_model
  cache = str(tmp_path / "cache")
  embed = functools.partial(ec.split_image_embeddings, model, params, data.dev,
                            batch_size=8, cache_dir=cache)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  second, hit = embed()
  assert not hit and not os.path.exists(cache)  # computed, left to process 0
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  first, hit = embed()
  assert not hit and os.listdir(cache)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  again, hit = embed()
  assert hit and len(count_image_encodings) == 2
  np.testing.assert_array_equal(again, first)
  np.testing.assert_allclose(second, first, atol=1e-6)


def test_lit_trains_only_the_text_tower_on_cached_embeddings_and_resumes(
    full_model, pixel_config, count_image_encodings, tmp_path):
  """LiT through the trainer: the locked tower embeds each image once (cached
  next to the data), a step's program holds no image tower, its loss is the
  full model's with the tower run on the same (centre-cropped) pixels, and a
  run resumed at step 2 ends bitwise where an uninterrupted one does."""
  data, full, _ = full_model
  towers = lambda: count_image_encodings.count("LockedImageTower")
  config = pixel_config.copy_and_resolve_references()
  config.model.lit = True
  config.train.max_steps = 2
  resumed = str(tmp_path / "resumed")
  trainer.train_and_evaluate(config, resumed)
  assert towers() == 2  # train and dev, once each
  assert os.path.exists(os.path.join(resumed, lit.TOWER_FILE))
  config.train.max_steps = 4
  trainer.train_and_evaluate(config, resumed)
  straight = str(tmp_path / "straight")
  trainer.train_and_evaluate(config, straight)
  assert towers() == 2  # later runs: the cache next to the data
  from tiny_config import params_at  # pylint: disable=import-outside-toplevel
  for a, b in zip(jax.tree.leaves(params_at(resumed, 4)), jax.tree.leaves(params_at(straight, 4))):
    np.testing.assert_array_equal(a, b)

  # One LiT step vs the full model on the same batch.
  lit_model = trainer.build_model(config, len(data.vocab))
  state_params = params_at(straight, 4)
  assert "image_encoder" not in state_params
  locked, _ = lit.locked_params(config, straight, lit_model)
  lit_data = lit.embed_data(config, straight, data, lit_model, locked)
  assert towers() == 2
  lit_batch = next(lit_data.train_batches())
  centre = pixel_config.copy_and_resolve_references()
  centre.data.image.update(crop="center", flip=False)
  pixel_batch = next(experiment_data.prepare(centre, "unused").train_batches())
  np.testing.assert_array_equal(lit_batch["caption_ids"], pixel_batch["caption_ids"])
  options = losses.LossOptions.from_config(config.loss)

  def loss(model, params, batch):
    return train_step_lib.batch_loss(model, {"params": params}, batch, options=options)[0]
  full_params = {**state_params, "image_encoder": locked}
  lit_loss = jax.jit(functools.partial(loss, lit_model))
  np.testing.assert_allclose(lit_loss(state_params, lit_batch),
                             jax.jit(functools.partial(loss, full))(full_params, pixel_batch),
                             rtol=1e-5)
  # The step's program: no patch-embedding convolution, no pixels.
  program = str(jax.make_jaxpr(functools.partial(loss, lit_model))(state_params, lit_batch))
  assert "conv_general_dilated" not in program
  assert "conv_general_dilated" in str(jax.make_jaxpr(functools.partial(loss, full))(
      full_params, pixel_batch))
  assert lit_batch["images"].shape == (config.train.batch_size, lit_model.arch.embed_dim)

  # Evaluation and inference of the LiT run encode pixels with its locked tower.
  from itr_jax import evaluate as evaluate_cli  # pylint: disable=import-outside-toplevel
  from itr_jax import inference  # pylint: disable=import-outside-toplevel
  report = evaluate_cli.evaluate_run(straight, "dev", "latest", write=False)
  assert report["checkpoint_step"] == 4 and towers() == 2  # read from the cache
  pixels = next(iter(pipeline.eval_image_batches(data.dev, batch_size=8)))
  retriever = inference.load(straight, "latest")
  np.testing.assert_allclose(retriever.encode_images(pixels["images"][pixels["mask"]]),
                             lit_data.dev.images, atol=1e-5)
  # Its examples page shows the images themselves, not their embeddings.
  from itr_jax.report import examples  # pylint: disable=import-outside-toplevel
  with open(examples.write_examples_page(straight, "dev", checkpoint="latest",
                                         num_queries=2, k=2), encoding="utf-8") as f:
    page = f.read()
  assert "data:image/" in page and "no thumbnail" not in page
