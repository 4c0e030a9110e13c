"""A workdir written by the dual-encoder importer, used end to end: the
evaluation (itr_jax.evaluate), the retrieval behind itr_jax.retrieve and the
inference API, on the tiny rendered pixel demo with the importer tests'
Hugging Face CLIP fixture. Plus: per-block remat is in the traced program."""
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from itr_jax import evaluate as evaluate_cli
from itr_jax import inference
from itr_jax.data import synthetic_pixels
from itr_jax.evaluation import evaluate
from itr_jax.evaluation import retrieval
from itr_jax.evaluation import runs
from itr_jax.models import dual_encoder
from itr_jax.tools import import_dual_encoder
from test_metrics_recall import reference_i2t, reference_t2i

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "dual_encoder")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """(workdir, run, image_emb, caption_emb): the imported run
  opened on the demo's test split, and that split's encodings."""
  root = tmp_path_factory.mktemp("imported_clip")
  data = synthetic_pixels.generate(str(root / "pixels"), image_size=32, seed=3,
                                   num_train=2, num_dev=2, num_test=4,
                                   caption_encoder="tfidf", emb_dim=8)
  workdir = str(root / "run")
  # The demo's image files are relative to its folder.
  import_dual_encoder.import_checkpoint(os.path.join(FIXTURES, "clip_hf"), workdir,
                                        data_dir=data, image_root=data)
  run = runs.load_run(workdir, "test")
  image_emb, caption_emb = evaluate.encode_eval_split(run.model, run.params, run.split,
                                                      run.vocab, run.config)
  return workdir, run, image_emb, caption_emb


def _pixels_oracle(run):
  """The split's images as the CLIP tower expects them, in NumPy: the demo's
  PNGs are at the tower's 32 x 32, so preprocessing is the normalisation."""
  _, mean, std = dual_encoder.image_preprocessing(run.config.model)
  names = open(os.path.join(run.data_dir, "test_images.txt")).read().split()
  pixels = [np.asarray(Image.open(os.path.join(run.data_dir, n)).convert("RGB"), np.float64)
            for n in names]
  return ((np.stack(pixels) / 255 - np.array(mean)) / np.array(std)).astype(np.float32)


def test_evaluate_scores_the_imported_model_on_pixels(imported):
  workdir, run, image_emb, caption_emb = imported
  assert run.config.data.name == "images" and run.step == 0
  assert run.config.eval.max_len == run.model.arch.context_length
  report = evaluate_cli.evaluate_run(workdir, "test", save_sims=True)
  sims = np.load(report["files"]["report"][:-len(".json")] + "_sims.npy")
  assert sims.shape == (4, 20)
  np.testing.assert_allclose(sims, image_emb.astype(np.float64) @ caption_emb.T.astype(
      np.float64), atol=1e-5)
  i2t, t2i = reference_i2t(sims, 5), reference_t2i(sims, 5)
  for key in ("r1", "r5", "r10"):
    assert report["full"][f"i2t_{key}"] == pytest.approx(i2t[key], abs=1e-9)
    assert report["full"][f"t2i_{key}"] == pytest.approx(t2i[key], abs=1e-9)


def test_retrieve_ranks_the_split_with_the_imported_model(imported):
  """What `itr_jax.retrieve` prints, both directions (the command itself is
  tested in a real process by test_retrieve.py)."""
  _, run, image_emb, caption_emb = imported
  c = 7
  (result,) = retrieval.text_to_image(run, image_emb, [run.split.captions[c]], k=3)
  scores = image_emb.astype(np.float64) @ caption_emb[c].astype(np.float64)
  assert [h["image"] for h in result["hits"]] == np.argsort(-scores, kind="stable")[:3].tolist()
  np.testing.assert_allclose([h["score"] for h in result["hits"]],
                             np.sort(scores)[::-1][:3], atol=1e-5)
  assert result["unknown_words"] == []  # a BPE tokenizer has no unknown words
  result = retrieval.image_to_text(run, image_emb, caption_emb, 2, k=20)
  scores = caption_emb.astype(np.float64) @ image_emb[2].astype(np.float64)
  assert [h["caption"] for h in result["hits"]] == np.argsort(-scores, kind="stable").tolist()
  assert result["own_captions"] == run.split.captions[10:15]


def test_inference_api_opens_the_imported_workdir(imported):
  workdir, run, image_emb, caption_emb = imported
  retriever = inference.load(workdir)
  assert retriever.two_tower and retriever.embed_size == run.model.arch.embed_dim
  np.testing.assert_allclose(retriever.encode_images(_pixels_oracle(run)), image_emb,
                             atol=1e-5)
  texts = run.split.captions[:3]
  np.testing.assert_allclose(retriever.encode_captions(texts), caption_emb[:3], atol=1e-5)
  (hits,) = retriever.search([texts[0]], image_emb, k=2)
  assert [i for i, _ in hits] == np.argsort(-(image_emb @ caption_emb[0]), kind="stable")[
      :2].tolist()


def test_remat_wraps_each_transformer_block():
  """model.remat puts every block of both towers under jax.checkpoint (the
  program the memory benchmark compiles with the barriers kept)."""
  images, tokens, lengths = jnp.zeros((1, 32, 32, 3)), jnp.ones((1, 4), jnp.int32), jnp.array([4])

  def checkpoints(remat):
    config = ml_collections.ConfigDict(dict(name="clip", variant="tiny", vocab_size=8,
                                            remat=remat))
    model = dual_encoder.create_model(config)
    variables = jax.eval_shape(model.init, jax.random.key(0), images, tokens, lengths)
    jaxpr = jax.make_jaxpr(lambda v: model.apply(v, images, tokens, lengths))(variables)
    return sum(e.primitive.name in ("checkpoint", "remat2") for e in jaxpr.jaxpr.eqns)

  assert checkpoints(False) == 0
  assert checkpoints(True) == 4  # 2 image + 2 text blocks
