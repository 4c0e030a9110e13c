"""Retrieval evaluation of a model on a split: recall, RSUM and NDCG.

NDCG is reported with two relevance sources: RSC relevance from the split's
sentence embeddings (what the loss optimises; any dataset with embeddings),
and ground-truth relevance where the dataset knows it (synthetic scenes).
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from itr_jax import metrics
from itr_jax.data import pipeline
from itr_jax.data.precomputed import PrecomputedSplit
from itr_jax.data.vocab import Vocabulary
from itr_jax.evaluation import encode
from itr_jax.evaluation import similarity
from itr_jax.relevance import rsc_matrix

# Shown on the console after each dev evaluation (NDCG keys with the cutoff
# eval.ndcg_k when set: metrics.ndcg_key).
SUMMARY_KEYS = ("rsum", "i2t_r1", "t2i_r1", "rsc_ndcg_i2t", "rsc_ndcg_t2i",
                "true_ndcg_i2t", "true_ndcg_t2i")


def eval_ties(config: ml_collections.ConfigDict) -> str:
  """config.eval.ties, validated ("optimistic" for configs saved before it)."""
  return metrics.check_ties(config.eval.get("ties", "optimistic"),
                            "config.eval.ties")


def eval_max_len(config: ml_collections.ConfigDict, tokenizer,
                 captions) -> int:
  """Caption length to evaluate `captions` at: `config.eval.max_len`, or
  with 0 (the default) the longest of them, so that no caption is cut, as in
  the official evaluation. Configs saved without the field: data.max_len
  (how they were evaluated then)."""
  max_len = config.eval.get("max_len")
  if max_len is None:
    return config.data.max_len
  return max_len or pipeline.longest_caption(tokenizer, captions,
                                             guess=config.data.max_len)


def split_relevance(split: PrecomputedSplit) -> np.ndarray | None:
  """RSC relevance [N_images, N_captions] of every pair in `split`, if it has embeddings."""
  if split.caption_emb is None:
    return None
  emb = np.asarray(split.caption_emb, np.float32)
  image_caption_emb = emb.reshape(split.num_images, split.captions_per_image, -1)
  return np.asarray(rsc_matrix(image_caption_emb, emb))


def retrieval_report(image_emb: np.ndarray, caption_emb: np.ndarray, *,
                     captions_per_image: int, rsc_relevance=None,
                     true_relevance=None, ndcg_k: int = 0,
                     ties: str = "optimistic") -> dict[str, float]:
  """Flat metrics dict for one set of embeddings (sims = cosine similarities).

  `ties`: how recall and NDCG order tied scores (`metrics.recall`).
  """
  sims = np.asarray(jnp.asarray(image_emb) @ jnp.asarray(caption_emb).T)
  return sims_report(sims, captions_per_image=captions_per_image,
                     rsc_relevance=rsc_relevance, true_relevance=true_relevance,
                     ndcg_k=ndcg_k, ties=ties)


def sims_report(sims: np.ndarray, *, captions_per_image: int, rsc_relevance=None,
                true_relevance=None, ndcg_k: int = 0,
                ties: str = "optimistic") -> dict[str, float]:
  """Flat metrics dict for a score matrix [N_images, N_captions] of any scorer."""
  report = metrics.evaluate_retrieval(sims, captions_per_image=captions_per_image,
                                      ties=ties)
  k = ndcg_k or None
  for name, relevance in (("rsc", rsc_relevance), ("true", true_relevance)):
    if relevance is not None:
      both = metrics.ndcg_both_directions(sims, np.asarray(relevance), k=k,
                                          ties=ties)
      # rsc_ndcg_i2t, or rsc_ndcg@10_i2t with a cutoff (metrics.ndcg_key).
      report.update({metrics.ndcg_key(f"{name}_{key}", k): value
                     for key, value in both.items()})
  return report


def encode_eval_split(model, params, split: PrecomputedSplit, vocab: Vocabulary,
                      config: ml_collections.ConfigDict, *, progress: bool = False):
  """(image_emb [N_images, E], caption_emb [N_captions, E]) for the whole split.

  `progress`: show a progress bar per modality (long evaluations, e.g. COCO
  5K) when stderr is a terminal (not in logs or captured output).
  """
  bs = config.eval.batch_size
  images = pipeline.eval_image_batches(split, batch_size=bs, process_index=0,
                                       process_count=1)
  captions = pipeline.eval_caption_batches(split, vocab, batch_size=bs,
                                           max_len=eval_max_len(config, vocab, split.captions),
                                           process_index=0, process_count=1)
  if progress:
    images = _with_progress(images, -(-split.num_images // bs), "encoding images")
    captions = _with_progress(captions, -(-split.num_captions // bs), "encoding captions")
  return encode.encode_split(model, params, images, captions)


def _with_progress(batches, total: int, desc: str):
  """`batches` with a progress bar that opens at the first batch and closes at
  the last, so the two modalities' bars never nest (nested bars leave cursor
  movements in front of whatever is printed next)."""
  with tqdm.tqdm(total=total, unit="batch", desc=desc, leave=False,
                 disable=None) as bar:
    for batch in batches:
      yield batch
      bar.update(1)


def split_similarity(model, params, split: PrecomputedSplit, vocab: Vocabulary,
                     config: ml_collections.ConfigDict) -> np.ndarray:
  """Scores [N_images, N_captions] of the whole split (any scorer).

  Two-tower models encode each item once and take dot products;
  cross-attention scorers are scored in blocks over all devices
  (`similarity.similarity_matrix`, `config.eval.score_block`).
  """
  image_repr, caption_repr = encode_eval_split(model, params, split, vocab, config)
  block = config.eval.get("score_block", 128)
  return similarity.similarity_matrix(model, params, image_repr, caption_repr,
                                      mesh=encode.params_mesh(params),
                                      image_block=block, caption_block=block)


def evaluate_split(model, params, split: PrecomputedSplit, vocab: Vocabulary,
                   config: ml_collections.ConfigDict, *,
                   rsc_relevance: np.ndarray | None = None) -> dict[str, float]:
  """Encodes all of `split` with `params` (or variables) and scores retrieval on it.

  `rsc_relevance`: the split's `split_relevance`, if already computed (it
  does not change between evaluations of the same split).
  """
  sims = split_similarity(model, params, split, vocab, config)
  if rsc_relevance is None:
    rsc_relevance = split_relevance(split)
  return sims_report(
      sims, captions_per_image=split.captions_per_image,
      rsc_relevance=rsc_relevance, true_relevance=split.true_relevance,
      ndcg_k=config.eval.ndcg_k, ties=eval_ties(config))
