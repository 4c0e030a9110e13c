"""itr_jax: listwise ranking for image-text retrieval in JAX.

Implements "Integrating Listwise Ranking into Pairwise-based Image-Text
Retrieval" (Li et al., 2023): RSC relevance and the Smooth-NDCG loss, mixed
with the VSE++ triplet loss.
"""

__version__ = "0.1.0"
