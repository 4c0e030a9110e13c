"""TF-IDF sentence features: a deterministic stand-in for a sentence encoder.

RSC relevance needs one embedding per caption (the paper uses a pretrained
sentence encoder). Until one is wired in, captions are featurised as

.. math:: e = \\frac{P^\\top t}{\\|P^\\top t\\|},\\quad
          t_w = \\frac{\\mathrm{tf}(w)\\,\\mathrm{idf}(w)}{\\|\\mathrm{tf}\\cdot\\mathrm{idf}\\|},\\quad
          \\mathrm{idf}(w) = \\log\\frac{1 + n}{1 + \\mathrm{df}(w)} + 1

over word unigrams and bigrams (``tokenize`` tokens) fitted on the training
captions, with ``P`` a fixed Gaussian random projection to ``dim`` dimensions
(seeded; Johnson-Lindenstrauss keeps cosine similarities approximately), or
no projection when ``dim`` is 0. Terms unseen in training are ignored; a
caption with no known term gets the zero vector. NumPy only.

>>> f = TfidfFeaturizer.fit(["a red dog", "a blue car", "a red car"], dim=0)
>>> e = f.transform(["a red dog", "red dog"])
>>> round(float(e[0] @ e[1]), 3)
0.858

CLI, writing ``{split}_caps_emb.npy`` for every split of a dataset:

  python -m itr_jax.data.text_features --data_dir DIR [--dim 256]
"""
from __future__ import annotations

import collections
import os
from typing import Iterable, Sequence

import numpy as np

from itr_jax.data.vocab import tokenize


def ngrams(text: str) -> list[str]:
  """Word unigrams and bigrams of ``text``.

  >>> ngrams("A red dog")
  ['a', 'red', 'dog', 'a red', 'red dog']
  """
  words = tokenize(text)
  return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


class TfidfFeaturizer:
  """Fitted TF-IDF vocabulary + idf weights + fixed random projection."""

  def __init__(self, terms: Sequence[str], idf: np.ndarray, *, dim: int = 256,
               seed: int = 0):
    if dim < 0:
      raise ValueError(f"dim must be >= 0 (0: no projection), got {dim}")
    self.terms = {t: i for i, t in enumerate(terms)}
    self.idf = np.asarray(idf, np.float64)
    self.dim = dim
    self.seed = seed
    # Scaled so that E[||P^T t||^2] = ||t||^2.
    self.projection = (
        np.random.default_rng([seed, len(terms), dim]).standard_normal(
            (len(terms), dim)).astype(np.float32) / np.sqrt(dim)
        if dim else None)

  @property
  def output_dim(self) -> int:
    return self.dim or len(self.terms)

  @classmethod
  def fit(cls, captions: Iterable[str], *, dim: int = 256, seed: int = 0,
          min_count: int = 1, max_terms: int = 50_000) -> "TfidfFeaturizer":
    """Fits terms (those in >= ``min_count`` captions, the ``max_terms`` most
    frequent, ties alphabetical) and their idf on ``captions``."""
    df = collections.Counter()
    n = 0
    for caption in captions:
      df.update(set(ngrams(caption)))
      n += 1
    if n == 0:
      raise ValueError("captions must be non-empty to fit TF-IDF")
    terms = sorted((t for t, c in df.items() if c >= min_count),
                   key=lambda t: (-df[t], t))[:max_terms]
    if not terms:
      raise ValueError(f"no term occurs in >= min_count={min_count} captions")
    idf = np.log((1 + n) / (1 + np.array([df[t] for t in terms], np.float64)))
    return cls(terms, idf + 1, dim=dim, seed=seed)

  def transform(self, captions: Sequence[str], *,
                chunk: int = 2048) -> np.ndarray:
    """Unit-norm (or zero) features ``float32[len(captions), output_dim]``."""
    out = np.zeros((len(captions), self.output_dim), np.float32)
    for start in range(0, len(captions), chunk):
      rows, cols, vals = [], [], []
      for r, caption in enumerate(captions[start:start + chunk]):
        counts = collections.Counter(
            self.terms[g] for g in ngrams(caption) if g in self.terms)
        rows.extend([r] * len(counts))
        cols.extend(counts.keys())
        vals.extend(counts.values())
      rows = np.asarray(rows, np.int64)
      cols = np.asarray(cols, np.int64)
      vals = np.asarray(vals, np.float64) * self.idf[cols]
      block = out[start:start + chunk]
      if self.projection is None:
        block[rows, cols] = vals
      elif len(rows):
        # Sparse rows times the projection: sum each caption's (contiguous)
        # projected terms with one reduceat; captions with no term stay 0.
        # Only non-empty rows take part: their starts are strictly increasing.
        per_row = np.bincount(rows, minlength=len(block))
        nonempty = per_row > 0
        starts = (np.cumsum(per_row) - per_row)[nonempty]
        block[nonempty] = np.add.reduceat(
            vals[:, None].astype(np.float32) * self.projection[cols], starts,
            axis=0)
      norms = np.linalg.norm(block, axis=1, keepdims=True)
      np.divide(block, norms, out=block, where=norms > 0)
    return out


def write_caption_embeddings(data_dir: str, *, splits: Sequence[str] | None = None,
                             train_split: str = "train", dim: int = 256,
                             seed: int = 0, min_count: int = 1,
                             overwrite: bool = False) -> dict[str, str]:
  """Fits TF-IDF on ``{train_split}_caps.txt`` and writes
  ``{split}_caps_emb.npy`` for each split; returns {split: path}."""
  # Imported here: precomputed.py points users at this module's CLI.
  from itr_jax.data import precomputed  # pylint: disable=g-import-not-at-top
  from itr_jax.data import caption_embeddings  # pylint: disable=g-import-not-at-top
  featurizer = TfidfFeaturizer.fit(
      precomputed.read_captions(os.path.join(data_dir, f"{train_split}_caps.txt")),
      dim=dim, seed=seed, min_count=min_count)
  written = {}
  for split in (splits or precomputed.available_splits(data_dir)):
    path = os.path.join(data_dir, f"{split}_caps_emb.npy")
    if os.path.exists(path) and not overwrite:
      raise ValueError(f"{path!r} exists; pass --overwrite to replace it")
    captions = precomputed.read_captions(
        os.path.join(data_dir, f"{split}_caps.txt"))
    np.save(path, featurizer.transform(captions))
    # A sentence-encoder sidecar describes the file just replaced: drop it so
    # the loader does not check the new embeddings against the old encoder.
    stale_sidecar = caption_embeddings.sidecar_path(path)
    if os.path.exists(stale_sidecar):
      os.remove(stale_sidecar)
    written[split] = path
  return written


def _define_flags(fv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("data_dir", None, "Precomputed dataset directory.", flag_values=fv)
  flags.mark_flag_as_required("data_dir", flag_values=fv)
  flags.DEFINE_list("splits", [], "Splits to embed (default: every split found).",
                    flag_values=fv)
  flags.DEFINE_string("train_split", "train", "Split whose captions fit the TF-IDF "
                      "vocabulary.", flag_values=fv)
  flags.DEFINE_integer("dim", 256, "Random-projection dimension; 0 keeps all terms.",
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Projection seed.", flag_values=fv)
  flags.DEFINE_integer("min_count", 1, "Minimum n-gram count.", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace existing embeddings.", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m itr_jax.data.text_features --data_dir=DIR [...]` (absl flags)."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  args = cli.parse_own_flags(argv, _define_flags, usage=(
      "python -m itr_jax.data.text_features --data_dir=DIR [flags]\n"
      "Writes TF-IDF caption embeddings {split}_caps_emb.npy (a stand-in for a "
      "sentence encoder) for a precomputed ITR dataset."))
  written = write_caption_embeddings(
      args.data_dir, splits=args.splits or None, train_split=args.train_split,
      dim=args.dim, seed=args.seed, min_count=args.min_count,
      overwrite=args.overwrite)
  for split, path in written.items():
    print(f"{split}: {path}")


if __name__ == "__main__":
  main()
