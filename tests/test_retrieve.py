"""itr_jax.evaluation.retrieval (python -m itr_jax.retrieve): free-text and image queries against a trained run's split."""
import numpy as np
import pytest

from itr_jax.evaluation import evaluate
from itr_jax.evaluation import retrieval as retrieve
from itr_jax.evaluation import runs


@pytest.fixture(scope="module")
def opened(tiny_run):
  _, workdir, _, _ = tiny_run
  run = runs.load_run(workdir, "test")
  image_emb, caption_emb = evaluate.encode_eval_split(run.model, run.params, run.split,
                                                      run.vocab, run.config)
  return run, image_emb, caption_emb


def test_a_caption_as_text_query_ranks_like_its_embedding(opened):
  run, image_emb, caption_emb = opened
  for c in (0, 7, 41):
    text = run.split.captions[c]
    (result,) = retrieve.text_to_image(run, image_emb, [text], k=5)
    # float64 reference ranking from the split's own caption embedding
    scores = image_emb.astype(np.float64) @ caption_emb[c].astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:5]
    assert [h["image"] for h in result["hits"]] == order.tolist()
    np.testing.assert_allclose([h["score"] for h in result["hits"]], scores[order], atol=1e-5)
    first = result["hits"][0]["image"]
    assert result["hits"][0]["captions"] == run.split.captions[5 * first:5 * first + 5]
    assert result["unknown_words"] == []


def test_image_query_ranks_captions_and_marks_its_own(opened):
  run, image_emb, caption_emb = opened
  result = retrieve.image_to_text(run, image_emb, caption_emb, 3, k=80)
  scores = caption_emb.astype(np.float64) @ image_emb[3].astype(np.float64)
  assert [h["caption"] for h in result["hits"]] == np.argsort(-scores, kind="stable").tolist()
  assert sum(h["match"] for h in result["hits"]) == 5
  assert all(h["match"] == (h["caption"] // 5 == 3) for h in result["hits"])
  assert result["own_captions"] == run.split.captions[15:20]
  text = retrieve.format_image_to_text(result)
  assert text.count("* caption") == 5  # the query image's own captions are starred
  with pytest.raises(ValueError, match="not an image row"):
    retrieve.image_to_text(run, image_emb, caption_emb, 16, k=3)


def test_unknown_words_are_reported(opened):
  run, image_emb, _ = opened
  (result,) = retrieve.text_to_image(run, image_emb, ["a xyzzy dog"], k=2)
  assert result["unknown_words"] == ["xyzzy"]
  assert "<unk>" in retrieve.format_text_to_image(result)


def test_command_reads_queries_from_a_file_writes_json_and_caches(opened, tiny_run, tmp_path):
  """One real process: --queries_file, --json, the split's encodings cached
  in the workdir (a second call reuses them); an empty query is refused."""
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  run, image_emb, _ = opened
  _, workdir, _, _ = tiny_run
  queries = tmp_path / "queries.txt"
  queries.write_text(f"{run.split.captions[3]}\n\n{run.split.captions[7]}\n")
  env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))}
  proc = subprocess.run([sys.executable, "-m", "itr_jax.retrieve", f"--workdir={workdir}",
                         f"--queries_file={queries}", "--json", "--k=3", "--query="],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 1 and "Error: --query is empty" in proc.stderr, proc.stderr
  proc = subprocess.run([sys.executable, "-m", "itr_jax.retrieve", f"--workdir={workdir}",
                         f"--queries_file={queries}", "--json", "--k=3"],
                        capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout)
  assert [r["query"] for r in result["text_to_image"]] == [run.split.captions[3],
                                                           run.split.captions[7]]
  want = retrieve.text_to_image(run, image_emb, [run.split.captions[3]], 3)[0]
  assert [h["image"] for h in result["text_to_image"][0]["hits"]] == [
      h["image"] for h in want["hits"]]
  cached = sorted(f for f in os.listdir(os.path.join(workdir, "cache")) if f.endswith(".npy"))
  assert len(cached) == 2 and cached[1].startswith("test_retrieval_images-")
  np.testing.assert_allclose(np.load(os.path.join(workdir, "cache", cached[1])), image_emb,
                             atol=1e-6)
