"""The synthetic scenes rendered to small images: the embedded pixel demo.

Every scene of ``synthetic_scenes`` (same seed: same scenes, captions, RSC
embeddings and graded ground truth) is drawn as an ``S x S`` PNG (S = 64 by
default), so its captions are true of the picture:

* the setting is the background (sky and ground colours: park, street,
  beach, field, room);
* each object is a shape identifying its class (4 outlines x 6 inner marks =
  24 classes) filled with its colour, small or large, with its material as a
  texture (wooden: stripes, metal: a bright band, plastic: plain);
* relations are positions: "a on b" stacks a on top of b, "a under b" the
  reverse, "a next to b" side by side, "a behind b" puts a higher and
  partly hidden behind b (objects are painted far to near), "in front of"
  the reverse. The layout is scaled down to fit the picture when needed,
  which keeps every relation true.

``generate(out_dir)`` writes the synthetic-scenes dataset into
``out_dir/scenes`` (tiny region features, unused) and the raw-image dataset
into ``out_dir/pixels{S}``: ``{split}/{i:05d}.png``, ``{split}_images.txt``
and that split's captions, embeddings, relevance and ``vocab.json`` (so the
folder is a plain raw-image dataset whose image root is itself). Idempotent
and deterministic like ``synthetic_scenes.generate``.

>>> import tempfile
>>> d = generate(tempfile.mkdtemp() + "/px", image_size=32, num_train=6,
...              num_dev=2, num_test=0, caption_encoder="tfidf", emb_dim=8)
>>> sorted(n for n in os.listdir(d) if n.startswith("dev"))  # doctest: +NORMALIZE_WHITESPACE
['dev', 'dev_caps.txt', 'dev_caps_emb.npy', 'dev_images.txt',
 'dev_relevance.npy']

CLI: ``python -m itr_jax.data.synthetic_pixels --out_dir data/synthetic_pixels``
"""
from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from typing import Sequence

import numpy as np

from itr_jax.data import image_sources
from itr_jax.data import synthetic_scenes as scenes_lib

MANIFEST = "pixels.json"
FORMAT_VERSION = 1
COLOUR_RGB = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60),
              "yellow": (240, 220, 40), "black": (20, 20, 20),
              "white": (245, 245, 245), "brown": (130, 80, 40),
              "orange": (250, 140, 20), "grey": (140, 140, 140)}
# (sky, ground) colours; the horizon is at 40% of the height.
SETTING_RGB = {"park": ((170, 210, 240), (110, 160, 90)),
               "street": ((200, 200, 205), (90, 90, 95)),
               "beach": ((150, 200, 250), (230, 210, 160)),
               "field": ((210, 230, 245), (170, 190, 80)),
               "room": ((230, 215, 190), (160, 120, 90))}
OUTLINES = ("ellipse", "box", "triangle", "diamond")
MARKS = ("none", "hole", "bar", "dot", "slash", "cross")
SIZE_FRACTION = {"small": 0.2, "large": 0.34}  # of the picture's side
_SUPERSAMPLE = 2


def _contrast(rgb) -> tuple[int, int, int]:
  return (20, 20, 20) if sum(rgb) > 360 else (245, 245, 245)


def _draw_object(draw, box, obj: scenes_lib.Object) -> None:
  """Class shape (outline x mark) in its colour, with its material texture."""
  x0, y0, x1, y1 = box
  w, h = x1 - x0, y1 - y0
  fill = COLOUR_RGB[obj.attrs["colour"]]
  ink = _contrast(fill)
  outline, mark = OUTLINES[obj.cls % 4], MARKS[obj.cls // 4]
  line = max(1, int(w / 14))
  if outline == "ellipse":
    draw.ellipse(box, fill=fill, outline=ink, width=line)
  elif outline == "box":
    draw.rectangle(box, fill=fill, outline=ink, width=line)
  elif outline == "triangle":
    draw.polygon([(x0 + w / 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=ink,
                 width=line)
  else:
    draw.polygon([(x0 + w / 2, y0), (x1, y0 + h / 2), (x0 + w / 2, y1),
                  (x0, y0 + h / 2)], fill=fill, outline=ink, width=line)
  material = obj.attrs.get("material")
  cx, cy = x0 + w / 2, y0 + h * 0.6
  if material == "wooden":
    for k in (0.45, 0.6, 0.75):
      draw.line([(cx - w * 0.18, y0 + h * k), (cx + w * 0.18, y0 + h * k)],
                fill=(90, 55, 25), width=line)
  elif material == "metal":
    draw.line([(cx - w * 0.2, cy + h * 0.15), (cx + w * 0.2, cy - h * 0.15)],
              fill=(235, 235, 255), width=2 * line)
  r = w * 0.12
  if mark == "hole":
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=ink)
  elif mark == "bar":
    draw.rectangle([cx - w * 0.25, cy - r / 2, cx + w * 0.25, cy + r / 2], fill=ink)
  elif mark == "dot":
    draw.ellipse([cx - r / 2, y0 + h * 0.3 - r / 2, cx + r / 2, y0 + h * 0.3 + r / 2],
                 fill=ink)
  elif mark == "slash":
    draw.line([(cx - w * 0.2, cy - h * 0.2), (cx + w * 0.2, cy + h * 0.2)], fill=ink,
              width=2 * line)
  elif mark == "cross":
    draw.line([(cx - r, cy), (cx + r, cy)], fill=ink, width=2 * line)
    draw.line([(cx, cy - r), (cx, cy + r)], fill=ink, width=2 * line)


def _place(rng: np.random.Generator, scene: scenes_lib.Scene, sides,
           size: float) -> np.ndarray:
  """Unscaled boxes ``[n, 4]``: the relation chain, unrelated objects to the
  right of everything placed before them."""
  n = len(scene.objects)
  rel = {(a, b): r for a, r, b in scene.relations}
  # Chain order: sample_scene relates consecutive objects of a permutation.
  order = [scene.relations[0][0]] if scene.relations else [0]
  for a, _, b in scene.relations:
    order += [i for i in (a, b) if i not in order]
  order += [i for i in range(n) if i not in order]
  boxes = np.zeros((n, 4))
  boxes[order[0]] = [0, 0, sides[order[0]], sides[order[0]]]
  gap = 0.04 * size
  for k, (prev, cur) in enumerate(zip(order, order[1:])):
    px, py = boxes[prev, :2]
    sp, sc = sides[prev], sides[cur]
    bottom = py + sp
    if (prev, cur) in rel:
      r = rel[(prev, cur)]
    elif (cur, prev) in rel:  # "cur r prev" seen from prev
      r = scenes_lib.RELATIONS[rel[(cur, prev)]][1]
    else:
      r = None
    # r: "prev r cur"; place cur.
    if r == "next to":
      x, y = (px + sp + gap if rng.random() < 0.5 else px - gap - sc), bottom - sc
    elif r in ("on", "under"):  # cur right below / above, overlapping in x
      # Centres up to 0.8 of the overlap limit apart: two objects can share
      # one support side by side.
      x = px + sp / 2 - sc / 2 + rng.uniform(-0.4, 0.4) * (sp + sc)
      y = bottom if r == "on" else py - sc
    elif r in ("behind", "in front of"):
      # Overlapping, shifted to a random side; the nearer one (lower bottom
      # edge, painted later) is cur for "behind", prev for "in front of".
      shift = rng.uniform(0.4, 0.6) * (sp if rng.random() < 0.5 else -sc)
      depth = 0.3 * min(sp, sc) * (1 if r == "behind" else -1)
      x, y = px + shift, bottom + depth - sc
    else:  # unrelated: right of everything so far, at some other height
      placed = boxes[order[:k + 1]]
      x = placed[:, 2].max() + gap + rng.uniform(0, 0.15) * size
      y = py + rng.uniform(-0.25, 0.25) * size
    boxes[cur] = [x, y, x + sc, y + sc]
  return boxes


def visible_fractions(boxes: np.ndarray, grid: int = 48) -> np.ndarray:
  """Share of each box not covered by boxes painted after it (a lower bottom
  edge is nearer, as `render` paints), on a ``grid x grid`` raster."""
  boxes = np.asarray(boxes, np.float64)
  lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
  centres = lo + (np.arange(grid)[:, None] + 0.5) / grid * (hi - lo)
  xs, ys = centres[:, 0], centres[:, 1]
  inside = [((xs[None, :] >= b[0]) & (xs[None, :] < b[2]) &
             (ys[:, None] >= b[1]) & (ys[:, None] < b[3])) for b in boxes]
  shown = np.full((grid, grid), -1)
  for i in sorted(range(len(boxes)), key=lambda i: boxes[i, 3]):
    shown[inside[i]] = i
  return np.array([(shown[m] == i).mean() if m.any() else 0.0
                   for i, m in enumerate(inside)])


def layout(rng: np.random.Generator, scene: scenes_lib.Scene,
           size: float) -> list[list[float]]:
  """Object boxes ``[x0, y0, x1, y1]`` in a ``size x size`` picture that make
  every relation of `scene` true (see module doc), each object at least
  40% visible (the first of up to 20 random layouts that is)."""
  sides = [SIZE_FRACTION[o.attrs["size"]] * size for o in scene.objects]
  for _ in range(20):
    arr = _place(rng, scene, sides, size)
    if visible_fractions(arr).min() >= 0.4:
      break
  lo, hi = arr[:, :2].min(axis=0), arr[:, 2:].max(axis=0)
  margin = 0.04 * size
  scale = min(1.0, (size - 2 * margin) / max(hi - lo))
  extent = (hi - lo) * scale
  top_max = size - margin - extent
  # Objects stand on the ground: the lowest bottom edge below the horizon.
  top_min = np.minimum([margin, max(margin, 0.45 * size - extent[1])], top_max)
  offset = top_min + rng.uniform(0, 1, 2) * (top_max - top_min)
  return ((arr - np.tile(lo, 2)) * scale + np.tile(offset, 2)).tolist()


def render(scene: scenes_lib.Scene, rng: np.random.Generator, size: int = 64):
  """The scene as a ``size x size`` RGB `PIL.Image`."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  big = size * _SUPERSAMPLE
  sky, ground = SETTING_RGB[scene.setting]
  image = Image.new("RGB", (big, big), sky)
  draw = ImageDraw.Draw(image)
  draw.rectangle([0, int(0.4 * big), big, big], fill=ground)
  boxes = layout(rng, scene, big)
  # Far to near: a lower bottom edge is nearer (painted later).
  for i in sorted(range(len(boxes)), key=lambda i: boxes[i][3]):
    _draw_object(draw, boxes[i], scene.objects[i])
  return image.resize((size, size), Image.Resampling.LANCZOS)


def png_bytes(image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return buffer.getvalue()


def generate(out_dir: str, *, image_size: int = 64,
             **scene_params) -> str:
  """Writes (or reuses) the pixel dataset; returns its folder
  ``out_dir/pixels{image_size}`` (module doc).

  `scene_params`: `synthetic_scenes.generate`'s arguments (seed, num_train,
  ..., caption_encoder); ``regions`` and ``feature_dim`` are ignored (the
  region features are not used).
  """
  if image_size < 16:
    raise ValueError(f"image_size must be >= 16 pixels, got {image_size}")
  params = dict(scene_params, regions=4, feature_dim=1)
  scenes_dir = scenes_lib.generate(os.path.join(out_dir, "scenes"), **params)
  p = scenes_lib.read_manifest(os.path.join(scenes_dir, scenes_lib.MANIFEST))["params"]
  target = os.path.join(out_dir, f"pixels{image_size}")
  manifest = {"generator": "itr_jax.data.synthetic_pixels",
              "format_version": FORMAT_VERSION, "image_size": image_size,
              "scenes": p}
  if os.path.exists(os.path.join(target, MANIFEST)):
    if scenes_lib.read_manifest(os.path.join(target, MANIFEST)) == manifest:
      return target
    raise ValueError(f"{target!r} holds pixel data of other parameters; delete "
                     "it or choose another data_dir")
  if os.path.exists(target) and os.listdir(target):
    raise ValueError(f"{target!r} is not empty and has no {MANIFEST}: an "
                     "interrupted generation? Delete it to regenerate")
  tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
  os.makedirs(tmp)
  try:
    for index, split in enumerate(scenes_lib.SPLITS):
      n = p[f"num_{split}"]
      if n == 0:
        continue
      data = scenes_lib.generate_split(
          p["seed"], index, n, regions=p["regions"], feature_dim=p["feature_dim"],
          latent_dim=p["latent_dim"], noise=p["noise"])
      rng = np.random.default_rng([p["seed"], 1 + index, 2])
      os.makedirs(os.path.join(tmp, split))
      names = []
      for i, scene in enumerate(data.scenes):
        names.append(f"{split}/{i:05d}.png")
        render(scene, rng, image_size).save(os.path.join(tmp, names[-1]))
      with open(os.path.join(tmp, split + image_sources.IMAGES_SUFFIX), "w",
                encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in names))
      for name in (f"{split}_caps.txt", f"{split}_caps_emb.npy",
                   f"{split}_caps_emb.json", f"{split}_relevance.npy"):
        if os.path.exists(os.path.join(scenes_dir, name)):
          shutil.copy2(os.path.join(scenes_dir, name), os.path.join(tmp, name))
    shutil.copy2(os.path.join(scenes_dir, "vocab.json"), os.path.join(tmp, "vocab.json"))
    with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=1, sort_keys=True)
    if os.path.isdir(target):
      os.rmdir(target)
    try:
      os.rename(tmp, target)
    except OSError:  # another process published the same data first
      if not os.path.exists(os.path.join(target, MANIFEST)):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return target


def scenes_of(data_dir: str, split: str, count: int) -> list[scenes_lib.Scene] | None:
  """The first `count` scenes of a pixel dataset's split (regenerated); None
  if `data_dir` holds no pixel dataset or its split has fewer scenes."""
  path = os.path.join(data_dir, MANIFEST)
  if not os.path.exists(path) or split not in scenes_lib.SPLITS:
    return None
  try:
    return scenes_lib.first_scenes(scenes_lib.read_manifest(path).get("scenes"), split, count)
  except ValueError as e:
    raise ValueError(f"{path!r}: {e}; the pixel dataset is damaged, delete it to "
                     "regenerate.") from e


def main(argv: Sequence[str] | None = None) -> None:
  """`python -m itr_jax.data.synthetic_pixels --out_dir=DIR [--image_size=64]`."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from itr_jax import cli  # pylint: disable=import-outside-toplevel

  def define(fv):
    scenes_lib._define_flags(fv)  # pylint: disable=protected-access
    flags.DEFINE_integer("image_size", 64, "Picture side in pixels.", flag_values=fv)

  args = cli.parse_own_flags(argv, define, usage=(
      "python -m itr_jax.data.synthetic_pixels --out_dir=DIR [flags]\n"
      "Renders the synthetic scenes to images (a raw-image ITR dataset)."))
  out = generate(args.out_dir, image_size=args.image_size, seed=args.seed,
                 num_train=args.num_train, num_dev=args.num_dev,
                 num_test=args.num_test, latent_dim=args.latent_dim,
                 noise=args.noise, emb_dim=args.emb_dim,
                 relevance_splits=args.relevance_splits,
                 caption_encoder=args.caption_encoder)
  print(out)


if __name__ == "__main__":
  main()
