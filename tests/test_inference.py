"""The Python inference API (itr_jax.inference) on the shared tiny run: its
encodings equal the evaluation's, without opening the dataset."""
import doctest

import numpy as np
import pytest

from itr_jax import inference
from itr_jax.data import precomputed
from itr_jax.evaluation import evaluate
from itr_jax.evaluation import runs


def test_encodings_match_the_evaluation_and_docstring_examples_run(tiny_run):
  _, workdir, _, data_dir = tiny_run
  split = precomputed.load_split(data_dir, "test")
  run = runs.load_run(workdir, "test", "best")
  image_emb, caption_emb = evaluate.encode_eval_split(run.model, run.params, run.split,
                                                      run.vocab, run.config)
  retriever = inference.load(workdir)
  assert retriever.step == run.step and retriever.two_tower
  retriever.batch_size = 5  # several batches, the last one padded
  got_images = retriever.encode_images(split.images)
  got_captions = retriever.encode_captions(split.captions[:7])
  np.testing.assert_allclose(got_images, image_emb, atol=1e-5)
  np.testing.assert_allclose(got_captions, caption_emb[:7], atol=1e-5)
  scores = retriever.score(got_images, got_captions)
  np.testing.assert_allclose(scores, got_images.astype(np.float64) @ got_captions.T, atol=1e-5)
  (hits,) = retriever.search([split.captions[3]], got_images, k=4)
  assert [i for i, _ in hits] == list(np.argsort(-scores[:, 3], kind="stable")[:4])
  (best,) = retriever.search_captions(got_images[:1], got_captions, k=1)
  assert best[0][0] == int(np.argmax(scores[0]))
  with pytest.raises(ValueError, match="non-empty"):
    retriever.encode_captions([""])
  result = doctest.testmod(inference, extraglobs={"workdir": workdir,
                                                  "images": np.asarray(split.images)})
  assert result.attempted > 0 and result.failed == 0
