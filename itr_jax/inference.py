"""Use a trained (or imported) run from Python: encode, score, search.

One entry point, `load(workdir)`, opens a run by its working directory (no
dataset needed: the model, its variables and its caption tokenizer all come
from the workdir) and returns a `Retriever`:

>>> retriever = load(workdir)                      # its best checkpoint
>>> text_emb = retriever.encode_captions(["a red ball on the grass", "two dogs"])
>>> text_emb.shape == (2, retriever.embed_size)    # L2-normalised rows
True
>>> image_emb = retriever.encode_images(images)    # region features [N, R, F]
>>> scores = retriever.score(image_emb, text_emb)  # [N_images, N_texts]
>>> scores.shape == (len(images), 2)
True
>>> hits = retriever.search(["a red ball on the grass"], image_emb, k=3)
>>> [len(h) for h in hits], hits[0][0][0] == int(scores[:, 0].argmax())
([3], True)

`encode_images` takes what the model's image tower takes: precomputed region
features `[N, R, F]` for the VSE / SGRAF models, pixels `[N, S, S, 3]`
(preprocessed as the model expects) for pixel dual encoders (LiT runs
too: their locked image tower, kept in the workdir, encodes the pixels); it
calls the model's own `encode_images`, so any registered model works. For two-tower
models the encodings are L2-normalised embeddings and `score` is their dot
product (cosine similarity); for cross-attention scorers (SGR, SAF) they are
the model's region/word representations and `score` runs its
cross-attention on every pair.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from itr_jax.evaluation import encode
from itr_jax.evaluation import evaluate
from itr_jax.evaluation import retrieval
from itr_jax.evaluation import runs
from itr_jax.evaluation import similarity
from itr_jax.models import scorer
from itr_jax.training import checkpointing
from itr_jax.training import experiment_data
from itr_jax.training import init_from
from itr_jax.training import lit
from itr_jax.training import trainer
from itr_jax.training import workdir as workdir_lib


@dataclasses.dataclass
class Retriever:
  """A trained model ready for inference (made by `load`)."""
  workdir: str
  step: int
  config: object  # the run's ml_collections.ConfigDict
  model: object  # the flax module
  variables: dict  # {"params": ..., and e.g. "batch_stats"}
  tokenizer: object  # the caption tokenizer (word vocabulary or WordPiece)
  batch_size: int = 128
  # LiT runs: the locked image tower and its variables (the model itself
  # takes embeddings); None: `model` encodes images.
  image_model: object = None
  image_variables: dict | None = None

  @property
  def two_tower(self) -> bool:
    """True when encodings are embeddings scored by a dot product."""
    return scorer.is_two_tower(self.model)

  @property
  def embed_size(self) -> int:
    """Columns of the two-tower encodings (a dual encoder's from its architecture)."""
    arch = getattr(self.model, "arch", None)
    return int(arch.embed_dim if arch is not None else self.config.model.embed_size)

  def _batched(self, fn, *arrays, variables=None):
    """`fn` over rows of `arrays` in fixed-size batches (one compilation), with
    `variables` (default: the model's)."""
    variables = self.variables if variables is None else variables
    n = arrays[0].shape[0]
    if n == 0:
      raise ValueError("Nothing to encode: the input has no rows.")
    out = []
    size = min(self.batch_size, n)
    for start in range(0, n, size):
      chunk = [a[start:start + size] for a in arrays]
      rows = chunk[0].shape[0]
      chunk = [encode._pad_rows(c, size) for c in chunk]  # pylint: disable=protected-access
      out.append(jax.tree.map(lambda x, r=rows: np.asarray(x)[:r], fn(variables, *chunk)))
    return jax.tree.map(lambda *parts: np.concatenate(parts, axis=0), *out)

  def encode_captions(self, texts: Sequence[str]):
    """Encodings of `texts` (float32 [N, E] embeddings for two-tower models)."""
    if isinstance(texts, str):
      raise TypeError("encode_captions takes a list of texts, not one string.")
    texts = list(texts)
    if not texts or any(not t.strip() for t in texts):
      raise ValueError("Every caption must be a non-empty text.")
    # The evaluation's caption length (config.eval.max_len; 0: the longest
    # text, so nothing is cut), so encodings equal the evaluation's.
    max_len = evaluate.eval_max_len(self.config, self.tokenizer, texts)
    tokens, lengths = self.tokenizer.encode_batch(texts, max_len)
    _, encode_texts = encode._encoders(self.model)  # pylint: disable=protected-access
    return self._batched(encode_texts, np.asarray(tokens), np.asarray(lengths))

  def encode_images(self, images):
    """Encodings of `images`: region features [N, R, F] or, for pixel models,
    pixels [N, S, S, 3]; whatever the model's `encode_images` takes."""
    images = np.asarray(images, np.float32)
    if self.image_model is not None:
      encode_images, _ = encode._encoders(self.image_model)  # pylint: disable=protected-access
      return self._batched(encode_images, images, variables=self.image_variables)
    encode_images, _ = encode._encoders(self.model)  # pylint: disable=protected-access
    return self._batched(encode_images, images)

  def score(self, image_repr, caption_repr) -> np.ndarray:
    """float32 [N_images, N_captions] scores of every pair."""
    return np.asarray(similarity.similarity_matrix(
        self.model, self.variables, image_repr, caption_repr, progress=False))

  def search(self, texts: Sequence[str], image_repr, k: int = 10) -> list[list[tuple[int, float]]]:
    """For each text, its `k` best images as (row of `image_repr`, score), best first."""
    scores = self.score(image_repr, self.encode_captions(texts))
    return [[(int(i), float(column[i])) for i in retrieval.top_k(column, k)]
            for column in scores.T]

  def search_captions(self, image_repr, caption_repr, k: int = 10) -> list[list[tuple[int, float]]]:
    """For each image of `image_repr`, its `k` best captions as (row, score)."""
    scores = self.score(image_repr, caption_repr)
    return [[(int(c), float(row[c])) for c in retrieval.top_k(row, k)] for row in scores]


def load(workdir: str, checkpoint: str = "best", *, batch_size: int = 128) -> Retriever:
  """Opens `workdir`'s run at `checkpoint` ('best' by dev RSUM, 'latest' or a step).

  No dataset is read: the tokenizer is the run's saved one (`vocab.json` in
  the workdir, or the BERT tokenizer its config names).
  """
  config = workdir_lib.load_config(workdir)
  tokenizer = experiment_data.resolve_tokenizer(config, config.data.data_dir,
                                                workdir=workdir)
  model = trainer.build_model(config, len(tokenizer))
  checkpoints = checkpointing.Checkpoints(workdir, keep=config.train.keep_checkpoints,
                                          read_only=True)
  try:
    steps = runs.steps_to_try(checkpoints, checkpoint)
    directory = checkpoints.directory
  finally:
    checkpoints.close()
  if not steps:
    raise ValueError(f"No intact checkpoint in {directory}; train first with itr-train.")
  step = steps[0]
  saved = init_from.model_variables_of(init_from.restore_on_one_device(directory, step))
  variables = {"params": saved["params"], **saved["model_state"]}
  image_model = image_variables = None
  if lit.enabled(config):
    image_model, tower_params = lit.run_tower(workdir, model)
    image_variables = {"params": {"image_encoder": tower_params}}
  return Retriever(workdir, step, config, model, variables, tokenizer, batch_size,
                   image_model, image_variables)
