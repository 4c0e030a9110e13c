"""Top-k retrieval for free-text queries and single images of a split.

Library side of `python -m itr_jax.retrieve` (see there); `run` is a
`runs.LoadedRun`, the split's representations come from
`evaluate.encode_eval_split`: embeddings for two-tower models, region and
word features for cross-attention scorers (SGR, SAF), which score every
(image, query) pair with `similarity.similarity_matrix`.
"""
from __future__ import annotations

import jax
import numpy as np

from itr_jax.evaluation import encode
from itr_jax.evaluation import evaluate
from itr_jax.evaluation import similarity


def encode_texts(run, texts: list[str]):
  """The model's representation of free texts: L2-normalised embeddings
  [len(texts), E] for two-tower models, word features for cross-attention ones."""
  tokens, lengths = run.vocab.encode_batch(
      texts, evaluate.eval_max_len(run.config, run.vocab, texts))
  encode_images, encode_texts_fn = encode._encoders(run.model)  # pylint: disable=protected-access
  del encode_images
  return jax.tree.map(np.asarray, encode_texts_fn(run.params, tokens, lengths))


def _scores(run, image_repr, caption_repr) -> np.ndarray:
  """[N_images, N_captions] scores, in float64 for ranking."""
  return np.asarray(similarity.similarity_matrix(run.model, run.params, image_repr,
                                                 caption_repr, progress=False), np.float64)


def unknown_words(vocab, text: str) -> list[str]:
  """Words of `text` the word vocabulary maps to <unk> ([] for WordPiece)."""
  from itr_jax.data import vocab as vocab_lib  # pylint: disable=import-outside-toplevel
  if not isinstance(vocab, vocab_lib.Vocabulary):
    return []
  return [w for w in vocab_lib.tokenize(text) if w not in vocab.word2idx]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k highest scores, best first (ties: lower index first).

  >>> top_k(np.array([0.1, 0.9, 0.5, 0.9]), 3).tolist()
  [1, 3, 2]
  """
  k = min(k, scores.shape[0])
  return np.argsort(-scores, kind="stable")[:k]


def text_to_image(run, image_repr, queries: list[str], k: int) -> list[dict]:
  """For each query: {query, unknown_words, hits: [{image, score, captions}]}."""
  cpi = run.split.captions_per_image
  results = []
  all_scores = _scores(run, image_repr, encode_texts(run, queries))  # [N_images, Q]
  for query, scores in zip(queries, all_scores.T):
    hits = [{"image": int(i), "score": float(scores[i]),
             "captions": run.split.captions[i * cpi:(i + 1) * cpi]}
            for i in top_k(scores, k)]
    results.append({"query": query, "unknown_words": unknown_words(run.vocab, query),
                    "hits": hits})
  return results


def image_to_text(run, image_repr, caption_repr, image: int, k: int) -> dict:
  """{image, own_captions, hits: [{caption, text, image, match, score}]}."""
  n = run.split.num_images
  if not 0 <= image < n:
    raise ValueError(f"--image={image} is not an image row of split "
                     f"{run.split_name!r} (0 .. {n - 1}).")
  cpi = run.split.captions_per_image
  one_image = jax.tree.map(lambda x: x[image:image + 1], image_repr)
  scores = _scores(run, one_image, caption_repr)[0]
  hits = [{"caption": int(c), "text": run.split.captions[c], "image": int(c) // cpi,
           "match": int(c) // cpi == image, "score": float(scores[c])}
          for c in top_k(scores, k)]
  return {"image": image, "own_captions": run.split.captions[image * cpi:(image + 1) * cpi],
          "hits": hits}


def format_text_to_image(result: dict) -> str:
  lines = [f"query: {result['query']!r}"]
  if result["unknown_words"]:
    lines.append(f"  (not in the vocabulary, read as <unk>: {result['unknown_words']})")
  for rank, hit in enumerate(result["hits"], 1):
    lines.append(f"  {rank:>3}. image {hit['image']:<6} score {hit['score']:.4f}")
    lines.extend(f"         - {c}" for c in hit["captions"])
  return "\n".join(lines)


def format_image_to_text(result: dict) -> str:
  lines = [f"image {result['image']}; its captions:"]
  lines.extend(f"    - {c}" for c in result["own_captions"])
  for rank, hit in enumerate(result["hits"], 1):
    mark = "*" if hit["match"] else " "
    lines.append(f"  {rank:>3}.{mark} caption {hit['caption']:<6} (image {hit['image']}) "
                 f"score {hit['score']:.4f}: {hit['text']}")
  lines.append("  (* = a caption of the query image)")
  return "\n".join(lines)
