"""Retrieval metrics (host-side NumPy; JAX arrays are accepted).

* `i2t`, `t2i`, `rsum`: Recall@1/5/10, medr, meanr (VSE++/SCAN protocol).
* `ndcg`, `ndcg_both_directions`: NDCG@k against graded relevance;
  `ndcg_key`, `split_ndcg_key`: result keys with the cutoff (`rsc_ndcg@10_i2t`).
* `evaluate_retrieval`, `coco_5k`, `coco_1k`: flat-dict evaluation protocols.
* `eccv_caption_metrics`: ECCV Caption / CxC / COCO metrics via `eccv_caption`.
"""
from itr_jax.metrics.eccv import eccv_caption_metrics
from itr_jax.metrics.ndcg import (ndcg, ndcg_both_directions, ndcg_key, ndcg_per_row,
                                  split_ndcg_key)
from itr_jax.metrics.protocols import coco_1k, coco_1k_folds, coco_5k, evaluate_retrieval
from itr_jax.metrics.recall import (TIES, check_ties, i2t, i2t_ranks, official_positions,
                                   rsum, summarize_ranks, t2i, t2i_ranks)
from itr_jax.metrics.topk import top_k_indices

__all__ = [
    "TIES", "check_ties", "official_positions", "coco_1k", "coco_1k_folds", "coco_5k",
    "eccv_caption_metrics", "evaluate_retrieval", "i2t", "i2t_ranks",
    "ndcg", "ndcg_both_directions", "ndcg_key", "ndcg_per_row", "rsum", "split_ndcg_key",
    "summarize_ranks", "t2i", "t2i_ranks", "top_k_indices",
]
