"""Pure functional (Flax linen) encoders for image-text retrieval.

>>> import jax, jax.numpy as jnp
>>> from itr_jax import models
>>> model = models.VSEModel(vocab_size=10, word_dim=3, embed_size=4)
>>> images, tokens, lengths = jnp.ones((2, 5, 6)), jnp.ones((2, 3), int), jnp.array([3, 1])
>>> variables = model.init(jax.random.key(0), images, tokens, lengths)
>>> [e.shape for e in model.apply(variables, images, tokens, lengths)]
[(2, 4), (2, 4)]
"""
from itr_jax.models.bert_text_encoder import BertTextEncoder, pretrained_text_tower, with_pretrained_bert
from itr_jax.models.dense_max_pool import DenseMaxPool, dense_max_pool
from itr_jax.models.dual_encoder import DualEncoder
from itr_jax.models.gru import GRU, GRULayer, gru_cell, gru_scan, reverse_valid_prefix
from itr_jax.models.image_encoder import ImageEncoder
from itr_jax.models.initializers import symmetric_uniform
from itr_jax.models.normalize import l2_normalize
from itr_jax.models.pooling import GPO, POOLINGS, max_pool, positional_encoding, sort_descending
from itr_jax.models.text_encoder import TextEncoder
from itr_jax.models.vse import MODEL_FIELDS, VSEModel
from itr_jax.models.vse_infty import VSEInftyModel
from itr_jax.models.sgraf import SGRAF
from itr_jax.models.registry import MODELS, create_model
from itr_jax.models import scorer

__all__ = [
    "BertTextEncoder", "DenseMaxPool", "DualEncoder", "MODELS", "SGRAF", "scorer", "GPO", "GRU", "GRULayer", "ImageEncoder", "MODEL_FIELDS", "POOLINGS",
    "TextEncoder", "VSEInftyModel", "VSEModel", "create_model", "dense_max_pool", "gru_cell", "gru_scan",
    "l2_normalize", "max_pool", "positional_encoding", "reverse_valid_prefix",
    "pretrained_text_tower", "sort_descending", "symmetric_uniform",
    "with_pretrained_bert",
]
