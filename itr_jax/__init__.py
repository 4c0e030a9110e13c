"""itr_jax: listwise ranking for image-text retrieval in JAX.

Implements "Integrating Listwise Ranking into Pairwise-based Image-Text
Retrieval" (Li et al., 2023): RSC relevance and the Smooth-NDCG loss, mixed
with the VSE++ triplet loss.
"""
import os as _os

# TensorFlow only feeds data here (tf.data); its oneDNN kernels and C++ info
# logs add nothing but console noise. Set before any TensorFlow import.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
