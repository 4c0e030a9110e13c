"""Data: the precomputed ITR format, vocabulary, synthetic scenes, tf.data input.

Import the other modules explicitly (``tfds_builder`` imports TensorFlow,
``pipeline`` uses it when installed; ``synthetic_scenes`` and
``text_features`` are also CLIs).
"""
from itr_jax.data.precomputed import PrecomputedSplit
from itr_jax.data.precomputed import available_splits
from itr_jax.data.precomputed import load_split
from itr_jax.data.vocab import Vocabulary
from itr_jax.data.vocab import resolve_vocab
from itr_jax.data.vocab import tokenize
