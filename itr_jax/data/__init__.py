"""Data: the precomputed ITR format, vocabulary, synthetic scenes, tf.data input.

TensorFlow is imported only by ``itr_jax.data.pipeline`` and
``itr_jax.data.tfds_builder``; import those modules explicitly.
"""
from itr_jax.data.precomputed import PrecomputedSplit
from itr_jax.data.precomputed import available_splits
from itr_jax.data.precomputed import load_split
from itr_jax.data.synthetic_scenes import generate as generate_synthetic_scenes
from itr_jax.data.vocab import Vocabulary
from itr_jax.data.vocab import resolve_vocab
from itr_jax.data.vocab import tokenize
