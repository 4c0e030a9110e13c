"""Turns `config.data` into opened, validated splits, a vocabulary and iterators.

Everything a run needs from disk is opened and checked here, before any
compilation or training work, so a broken dataset fails in seconds.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Iterator

import jax
import ml_collections
import numpy as np

from itr_jax import filesystem as fs
from itr_jax.data import caption_embeddings
from itr_jax.data import image_preprocessing
from itr_jax.data import image_sources
from itr_jax.data import pipeline
from itr_jax.data import precomputed
from itr_jax.data import staging
from itr_jax.data import synthetic_pixels
from itr_jax.data import synthetic_scenes
from itr_jax.data import tfds_source
from itr_jax.data import vocab as vocab_lib
from itr_jax.data import wordpiece_vocab
from itr_jax.evaluation import evaluate


VOCAB_FILE = "vocab.json"


@dataclasses.dataclass
class ExperimentData:
  config: ml_collections.ConfigDict
  data_dir: str
  train: precomputed.PrecomputedSplit
  dev: precomputed.PrecomputedSplit
  # The caption tokenizer: a word Vocabulary, or WordPiece for a BERT tower.
  vocab: vocab_lib.Vocabulary | wordpiece_vocab.WordPieceVocabulary

  @property
  def drop_last(self) -> bool:
    """config.data.drop_last (True for configs saved before the field existed)."""
    return self.config.data.get("drop_last", True)

  @property
  def steps_per_epoch(self) -> int:
    try:
      return pipeline.steps_per_epoch(self.train, self.config.train.batch_size,
                                      drop_last=self.drop_last)
    except ValueError as e:
      raise ValueError(f"Invalid config.data / config.train: {e}") from e

  @functools.cached_property
  def truncated_train_captions(self) -> int:
    """Train captions longer than config.data.max_len tokens (they are cut;
    the official code never truncates)."""
    return pipeline.count_truncated(self.vocab, self.train.captions,
                                    self.config.data.max_len)

  @functools.cached_property
  def dev_relevance(self) -> np.ndarray | None:
    """RSC relevance of every dev pair, computed once for all evaluations."""
    return evaluate.split_relevance(self.dev)

  def save_vocab(self, workdir: str) -> None:
    """Keeps the run's vocabulary in its workdir, so resuming reuses it."""
    path = fs.join(workdir, VOCAB_FILE)
    # WordPiece ids are fixed by config.model.bert_path: nothing to keep.
    if (isinstance(self.vocab, vocab_lib.Vocabulary)
        and jax.process_index() == 0 and not fs.exists(path)):
      self.vocab.save(path)

  def train_batches(self, start_step: int = 0,
                    batch_multiple: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """This process's training batches from global step `start_step` on.

    `batch_multiple`: the batch shards of the mesh; an epoch's last, smaller
    batch (config.data.drop_last False) is topped up to a multiple of it.
    """
    return pipeline.train_batches(
        self.train, self.vocab, batch_size=self.config.train.batch_size,
        seed=self.config.seed, max_len=self.config.data.max_len,
        start_step=start_step, drop_last=self.drop_last,
        batch_multiple=batch_multiple)


def data_dir(config: ml_collections.ConfigDict, *, generate: bool = True) -> str:
  """The dataset directory; generates the synthetic dataset there if asked to.

  With `generate=False` (evaluating a trained run) a synthetic dataset must
  already be there: FileNotFoundError instead of writing a new one. For
  data.name "tfds": the prepared dataset's folder (its vocab.json, if any, is
  the dataset's vocabulary).
  """
  data = config.data
  if data.name == "tfds":
    return tfds_source.dataset_dir(data.tfds_name, data.tfds_data_dir)
  if data.name == "synthetic_pixels":
    if not data.data_dir:
      raise ValueError("config.data.data_dir is empty: set it to the folder the "
                       "pixel demo is generated in, e.g. data/synthetic_pixels")
    target = os.path.join(data.data_dir, f"pixels{data.pixels_size}")
    if not generate and not os.path.exists(
        os.path.join(target, synthetic_pixels.MANIFEST)):
      raise FileNotFoundError(
          f"No pixel demo dataset in {os.path.abspath(target)!r}. Pass the "
          "folder the run was trained on with --data_dir=..., or train first.")
    return synthetic_pixels.generate(data.data_dir, image_size=data.pixels_size,
                                     **data.synthetic)
  if not data.data_dir:
    raise ValueError(
        "config.data.data_dir is empty: set it to the folder holding "
        "{split}_ims.npy and {split}_caps.txt, e.g. "
        "--config.data.data_dir=/path/to/f30k_precomp")
  if data.name in ("precomputed", "synthetic_scenes", "images") and fs.is_remote(
      data.data_dir):
    return _stage_dir(config)
  if data.name == "synthetic_scenes":
    if not generate and not os.path.exists(
        os.path.join(data.data_dir, synthetic_scenes.MANIFEST)):
      raise FileNotFoundError(
          f"No synthetic-scenes dataset in {os.path.abspath(data.data_dir)!r} "
          "(config.data.data_dir). Pass the folder the run was trained on with "
          "--data_dir=..., or train first (training generates it).")
    return synthetic_scenes.generate(data.data_dir, **data.synthetic)
  if data.name not in ("precomputed", "images"):
    raise ValueError(f"config.data.name must be 'precomputed', 'images', "
                     f"'synthetic_scenes', 'synthetic_pixels' or 'tfds', got "
                     f"{data.name!r}")
  return data.data_dir


def image_preprocessing_of(config: ml_collections.ConfigDict
                           ) -> image_preprocessing.ImagePreprocessing | None:
  """How raw images become model inputs (None for region-feature data):
  config.data.image, with size / mean / std from the image tower when unset."""
  if config.data.name not in ("images", "synthetic_pixels"):
    return None
  image = config.data.image
  size, mean, std = image.size, tuple(image.mean), tuple(image.std)
  if not size or not mean or not std:
    try:
      from itr_jax.models import dual_encoder  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(
          "config.data.image.size/mean/std are unset and this installation has "
          "no image towers to take them from; set all three") from e
    model = config.model.copy_and_resolve_references()
    # The vocabulary is not known yet and does not change the image tower.
    model.vocab_size = model.get("vocab_size") or 1
    tower_size, tower_mean, tower_std = dual_encoder.image_preprocessing(model)
    size, mean, std = size or tower_size, mean or tower_mean, std or tower_std
  try:
    return image_preprocessing.ImagePreprocessing(
        size=int(size), mean=tuple(mean), std=tuple(std), crop=image.crop,
        scale=tuple(image.scale), ratio=tuple(image.ratio), flip=bool(image.flip))
  except ValueError as e:
    raise ValueError(f"Invalid config.data.image: {e}") from e


def _split_files(split: str) -> list[str]:
  """The files of `split` in a precomputed folder (those present are staged)."""
  emb = f"{split}_caps_emb.npy"
  return [f"{split}_ims.npy", f"{split}_caps.txt", emb,
          caption_embeddings.sidecar_path(emb), f"{split}_relevance.npy"]


def _stage_dir(config: ml_collections.ConfigDict) -> str:
  """Local copy of a gs:// data_dir's shared files (`staging`): vocab.json,
  and for synthetic scenes the manifest and every file it lists."""
  data = config.data
  names = [VOCAB_FILE]
  if data.name == "synthetic_scenes":
    manifest = fs.join(data.data_dir, synthetic_scenes.MANIFEST)
    if not fs.exists(manifest):
      raise FileNotFoundError(
          f"No synthetic-scenes dataset in {data.data_dir!r} (no "
          f"{synthetic_scenes.MANIFEST}): generate it on a local disk "
          "(python -m itr_jax.data.synthetic_scenes --out_dir=DIR) and copy "
          "the folder there; datasets are not generated into a bucket.")
    files = synthetic_scenes.manifest_files(synthetic_scenes.read_manifest(manifest), manifest)
    names += [synthetic_scenes.MANIFEST, *files]
  local = staging.stage_dir(data.data_dir, names,
                            staging.cache_dir(data.get("local_cache_dir", "")))
  if data.name == "synthetic_scenes":  # checks the copy against its manifest
    synthetic_scenes.generate(local, **data.synthetic)
  return local


def _image_files(url: str, split: str) -> list[str]:
  """A raw-image split's files in folder `url` (shards included)."""
  shards = [n for n in fs.listdir(url)
            if n.startswith(f"{split}-") and n.endswith(".array_record")]
  return _split_files(split) + [split + image_sources.IMAGES_SUFFIX] + shards


def load_split(config: ml_collections.ConfigDict, directory: str, split: str, *,
               max_images: int | None = None,
               require_caption_emb: bool = False) -> precomputed.PrecomputedSplit:
  """Opens `split`; config.data.caption_emb_path may contain "{split}".

  Files on gs:// are first staged to config.data.local_cache_dir (`staging`).
  """
  if config.data.name == "tfds":
    return tfds_source.load_split(
        config.data.tfds_name, config.data.tfds_data_dir, split,
        max_images=max_images or None, require_caption_emb=require_caption_emb)
  cache = staging.cache_dir(config.data.get("local_cache_dir", ""))
  if fs.is_remote(config.data.data_dir):
    directory = staging.stage_dir(config.data.data_dir,
                                  _image_files(config.data.data_dir, split)
                                  if config.data.name == "images" else
                                  _split_files(split), cache)
  emb_path = config.data.caption_emb_path or None
  emb_path = emb_path.format(split=split) if emb_path else None
  if emb_path and fs.is_remote(emb_path):
    emb_path = caption_embeddings.stage_embeddings(emb_path, cache)
  image_root = (directory if config.data.name == "synthetic_pixels"
                else config.data.get("image_root", "") or None)
  return precomputed.load_split(
      directory, split, max_images=max_images or None,
      caption_emb_path=emb_path, require_caption_emb=require_caption_emb,
      image_root=image_root, preprocessing=image_preprocessing_of(config))


def resolve_tokenizer(config: ml_collections.ConfigDict, directory: str, *,
                      workdir: str | None = None):
  """The caption tokenizer config.model.text_tower needs.

  CLIP / SigLIP with config.model.tokenizer (imported published weights): that
  tokenizer (`tower_tokenizer`).
  "bert": the WordPiece ids of config.model.bert_path's tokenizer; else the
  word vocabulary (`vocab_lib.resolve_vocab`: config.data.vocab_path, then
  `workdir`'s, then the dataset's, else built from the train captions).
  """
  if config.model.name in ("clip", "siglip") and config.model.get("tokenizer"):
    # Imported published weights: their own tokenizer, not the data's words.
    from itr_jax.data import tower_tokenizer  # pylint: disable=g-import-not-at-top
    return tower_tokenizer.TowerTokenizer(config.model.tokenizer, config.model.name)
  if config.model.get("text_tower", "gru") == "bert":
    return wordpiece_vocab.WordPieceVocabulary(
        config.model.get("bert_path") or None)
  read_captions = None
  if config.data.name == "tfds":
    read_captions = functools.partial(tfds_source.split_captions,
                                      config.data.tfds_name,
                                      config.data.tfds_data_dir)
  return vocab_lib.resolve_vocab(
      directory, vocab_path=config.data.vocab_path or None, workdir=workdir,
      min_count=config.data.vocab_min_count,
      train_split=config.data.train_split,
      recipe=config.data.get("vocab_recipe", "itr_jax"),
      dev_split=config.data.dev_split, read_captions=read_captions)


def prepare(config: ml_collections.ConfigDict, workdir: str, *,
            reuse_workdir_vocab: bool = True) -> ExperimentData:
  """Opens and validates the train, dev and test splits and the vocabulary.

  Writes nothing into `workdir`; a vocabulary already there is reused (a
  resumed run must keep its word ids) unless `reuse_workdir_vocab` is False.
  """
  directory = data_dir(config)
  train = load_split(config, directory, config.data.train_split,
                     require_caption_emb=True)
  dev = load_split(config, directory, config.data.dev_split,
                   max_images=config.data.dev_max_images)
  if config.data.test_split:
    # Evaluated only after training (itr_jax.evaluate): check it now, not
    # after hours of training. An empty test_split skips this.
    load_split(config, directory, config.data.test_split)
  vocab = resolve_tokenizer(
      config, directory,
      workdir=workdir if reuse_workdir_vocab and fs.exists(
          fs.join(workdir, VOCAB_FILE)) else None)
  result = ExperimentData(config, directory, train, dev, vocab)
  _ = result.steps_per_epoch  # fails early if the batch exceeds the split
  return result

