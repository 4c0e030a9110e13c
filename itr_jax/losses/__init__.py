"""Losses for image-text retrieval: VSE++ triplet, CLIP InfoNCE, SigLIP sigmoid,
Smooth-NDCG and their mix.

Full-batch losses take `scores` [B, B] (image i vs caption j, positives on the
diagonal); the `*_rows` functions take a block of query rows against all
candidates, for computing a device's share of a sharded batch. The
hyperparameters travel as one `LossOptions` value.
"""
from itr_jax.losses.contrastive import PAIRWISE_KINDS
from itr_jax.losses.contrastive import chunked_pairwise_loss
from itr_jax.losses.contrastive import infonce_rows
from itr_jax.losses.contrastive import pairwise_loss
from itr_jax.losses.contrastive import sigmoid_rows
from itr_jax.losses.listwise import listwise_itr_loss
from itr_jax.losses.listwise import listwise_loss_of_rows
from itr_jax.losses.listwise import pairwise_rows
from itr_jax.losses.options import LossOptions
from itr_jax.losses.ranks import DEFAULT_CHUNK_SIZE
from itr_jax.losses.ranks import dense_smooth_ranks
from itr_jax.losses.ranks import hard_ranks
from itr_jax.losses.ranks import official_sigmoid
from itr_jax.losses.ranks import smooth_ranks
from itr_jax.losses.smooth_ndcg import dense_smooth_ndcg_rows
from itr_jax.losses.smooth_ndcg import discounted_cumulative_gain
from itr_jax.losses.smooth_ndcg import hard_ndcg_rows
from itr_jax.losses.smooth_ndcg import ideal_dcg
from itr_jax.losses.smooth_ndcg import ideal_dcgs
from itr_jax.losses.smooth_ndcg import smooth_ndcg_loss
from itr_jax.losses.smooth_ndcg import smooth_ndcg_loss_of_rows
from itr_jax.losses.smooth_ndcg import smooth_ndcg_rows
from itr_jax.losses.smooth_ndcg import t2i_relevance_rows
from itr_jax.losses.triplet import triplet_loss
from itr_jax.losses.triplet import triplet_rows

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "PAIRWISE_KINDS",
    "chunked_pairwise_loss",
    "infonce_rows",
    "pairwise_loss",
    "sigmoid_rows",
    "dense_smooth_ndcg_rows",
    "dense_smooth_ranks",
    "discounted_cumulative_gain",
    "hard_ndcg_rows",
    "hard_ranks",
    "ideal_dcg",
    "ideal_dcgs",
    "listwise_itr_loss",
    "listwise_loss_of_rows",
    "LossOptions",
    "pairwise_rows",
    "official_sigmoid",
    "smooth_ndcg_loss",
    "smooth_ndcg_loss_of_rows",
    "smooth_ndcg_rows",
    "smooth_ranks",
    "t2i_relevance_rows",
    "triplet_loss",
    "triplet_rows",
]
