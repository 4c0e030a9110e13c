"""Graded relevance between the images and captions of a batch."""
from itr_jax.relevance.rsc import rsc, rsc_matrix, with_positives

__all__ = ["rsc", "rsc_matrix", "with_positives"]
