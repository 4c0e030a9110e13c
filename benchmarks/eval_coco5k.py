"""COCO 5K evaluation time: itr_jax.metrics vs. the loop-based reference.

Scores a random float32 5000 x 25000 similarity matrix both ways (i2t + t2i
R@1/5/10, medr, meanr) with
  * the standard loop evaluation (one argsort per query, as in the VSE++/SCAN
    and Listwise_ITR evaluation scripts), reimplemented below as the baseline;
  * itr_jax.metrics (counts of strictly higher scores, chunked, no sorting);
checks both give identical numbers, and prints a Markdown table. Optional rows
time NDCG (--ndcg) and the ECCV Caption wrapper (--eccv).

  python benchmarks/eval_coco5k.py [--ndcg] [--eccv]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from itr_jax import metrics


def loop_i2t(sims, cpi):
  """Reference i2t: per image, argsort all captions, best rank of its own."""
  num_images = sims.shape[0]
  ranks = np.zeros(num_images)
  for i in range(num_images):
    order = np.argsort(sims[i])[::-1]
    ranks[i] = min(np.where(order == c)[0][0] for c in range(cpi * i, cpi * (i + 1)))
  return _summary(ranks)


def loop_t2i(sims, cpi):
  """Reference t2i: per caption, argsort all images, rank of its own."""
  sims = sims.T
  ranks = np.zeros(sims.shape[0])
  for c in range(sims.shape[0]):
    order = np.argsort(sims[c])[::-1]
    ranks[c] = np.where(order == c // cpi)[0][0]
  return _summary(ranks)


def _summary(ranks):
  n = len(ranks)
  return dict(r1=100.0 * len(np.where(ranks < 1)[0]) / n,
              r5=100.0 * len(np.where(ranks < 5)[0]) / n,
              r10=100.0 * len(np.where(ranks < 10)[0]) / n,
              medr=float(np.floor(np.median(ranks)) + 1), meanr=float(ranks.mean() + 1))


def _timed(fn, repeats=1):
  best, result = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = fn()
    best = min(best, time.perf_counter() - start)
  return best, result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num-images", type=int, default=5000)
  parser.add_argument("--captions-per-image", type=int, default=5)
  parser.add_argument("--ndcg", action="store_true", help="also time NDCG both ways")
  parser.add_argument("--ndcg-k", type=int, default=10)
  parser.add_argument("--eccv", action="store_true",
                      help="also time eccv_caption_metrics (needs 5000 images)")
  parser.add_argument("--skip-loop", action="store_true", help="skip the slow baseline")
  args = parser.parse_args()
  n, cpi = args.num_images, args.captions_per_image

  rng = np.random.default_rng(0)
  # Correlated embeddings, so that recalls are far from 0 as for a real model.
  images = rng.standard_normal((n, 64), dtype=np.float32)
  captions = np.repeat(images, cpi, axis=0) + 1.5 * rng.standard_normal((n * cpi, 64),
                                                                        dtype=np.float32)
  sims = images @ captions.T
  rows = []

  ours_s, ours = _timed(lambda: (metrics.i2t(sims, captions_per_image=cpi),
                                 metrics.t2i(sims, captions_per_image=cpi)), repeats=3)
  if args.skip_loop:
    loop_s = None
  else:
    loop_s, loop = _timed(lambda: (loop_i2t(sims, cpi), loop_t2i(sims, cpi)))
    if loop != ours:
      raise SystemExit(f"MISMATCH: loop {loop} vs itr_jax {ours}")
  rows.append((f"R@K/medr/meanr, i2t + t2i ({n}x{n * cpi})", loop_s, ours_s))

  if args.ndcg:
    relevance = rng.integers(0, 4, sims.shape, dtype=np.int8)  # graded levels 0..3
    k = args.ndcg_k
    t, _ = _timed(lambda: metrics.ndcg_both_directions(sims, relevance, k=k))
    rows.append((f"NDCG@{k}, i2t + t2i ({n}x{n * cpi})", None, t))
    fold = slice(0, n // 5), slice(0, n * cpi // 5)
    t, _ = _timed(lambda: metrics.ndcg_both_directions(sims[fold], relevance[fold]))
    rows.append((f"NDCG (full ranking), i2t + t2i ({n // 5}x{n * cpi // 5})", None, t))

  if args.eccv:
    annotations = metrics.eccv.load_annotations()
    caption_ids = np.asarray(annotations.coco_ids)
    image_ids = np.array([annotations.coco_gts["t2i"][int(c)][0] for c in caption_ids[::5]])
    t, _ = _timed(lambda: metrics.eccv_caption_metrics(sims, image_ids, caption_ids,
                                                       annotations=annotations))
    rows.append(("eccv_caption_metrics, default targets (5000x25000)", None, t))

  print(f"sims: {sims.shape} {sims.dtype}; identical metrics: "
        f"{'not checked' if args.skip_loop else 'yes'}")
  print(f"i2t: {ours[0]}\nt2i: {ours[1]}\n")
  print("| evaluation | loop-based (s) | itr_jax.metrics (s) | speed-up |")
  print("|---|---:|---:|---:|")
  for name, loop_t, ours_t in rows:
    loop_cell = "-" if loop_t is None else f"{loop_t:.2f}"
    speedup = "-" if loop_t is None else f"{loop_t / ours_t:.0f}x"
    print(f"| {name} | {loop_cell} | {ours_t:.2f} | {speedup} |")


if __name__ == "__main__":
  main()
