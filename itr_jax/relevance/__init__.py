"""Graded relevance between the images and captions of a batch."""
from itr_jax.relevance.rsc import rsc

__all__ = ["rsc"]
