"""Sentence encoders in pure JAX (BERT / sentence-transformers, no PyTorch)."""
from itr_jax.text_encoders.bert import BertConfig
from itr_jax.text_encoders.bert import BertEncoder
from itr_jax.text_encoders.bert import SentenceBert
from itr_jax.text_encoders.bert_weights import bert_params_from_state_dict
from itr_jax.text_encoders.bert_weights import load_bert_params
from itr_jax.text_encoders.mean_pool import mean_pool
from itr_jax.text_encoders.wordpiece import WordPiece
from itr_jax.text_encoders.sentence_encoder import default_model_dir
from itr_jax.text_encoders.sentence_encoder import load_pretrained_bert
from itr_jax.text_encoders.sentence_encoder import PretrainedBert
from itr_jax.text_encoders.sentence_encoder import SentenceEncoder
