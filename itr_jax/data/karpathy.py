r"""A Karpathy split JSON as a raw-image dataset folder.

  python -m itr_jax.data.karpathy --json=dataset_flickr30k.json \
      --out_dir=data/f30k_images [--restval]

reads the "Karpathy splits" file every Flickr30K / COCO user has
(``dataset_flickr30k.json``, ``dataset_coco.json``: ``{"images": [{"split",
"filepath"?, "filename", "sentences": [{"raw", "tokens"}], "cocoid"? ...}]}``)
and writes, per split, the files the raw-image loader reads
(``image_sources``):

* ``{split}_images.txt``: the image paths relative to the image root
  (``filepath/filename`` for COCO, ``filename`` for Flickr30K);
* ``{split}_caps.txt``: five captions per image (the ``raw`` sentence,
  whitespace collapsed), image i's on lines 5i..5i+4;
* ``{split}_image_ids.txt``: one id per image (``cocoid``, else the file
  name's stem), for the COCO-id protocols and the examples page.

Splits: ``train``, ``dev`` (the JSON's ``val``) and ``test``; COCO's
``restval`` images join ``train`` with ``--restval`` (as VSE++ / SCAN's
113,287-image COCO training set), in JSON order, else are left out.

Captions: the first five of each image in the JSON's order. COCO has 0.3%
images with six or seven; like the SCAN/VSE++ precomputed files, only the
first five are kept. An image with fewer than five is an error naming it.

Then write the RSC caption embeddings with
``python -m itr_jax.tools.embed_captions --data_dir=OUT --split=train`` (and
dev, test), and train with ``--config.data.name=images
--config.data.data_dir=OUT --config.data.image_root=/path/to/images``.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Sequence

from itr_jax import filesystem as fs
from itr_jax.data import image_sources

CAPTIONS_PER_IMAGE = 5
SPLITS = {"train": ("train",), "dev": ("val",), "test": ("test",)}
# dataset_coco.json is ~150 MB; a larger file is refused, not parsed.
MAX_JSON_BYTES = 1 << 30


def _caption(sentence, where: str) -> str:
  if not isinstance(sentence, dict):
    raise ValueError(f"{where}: a sentence must be an object, got {type(sentence).__name__}")
  raw = sentence.get("raw")
  if not isinstance(raw, str):
    tokens = sentence.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
      raise ValueError(f"{where}: sentence has neither 'raw' text nor 'tokens'")
    raw = " ".join(tokens)
  text = re.sub(r"\s+", " ", raw).strip()  # one caption per line
  if not text:
    raise ValueError(f"{where}: empty caption")
  return text


def read_splits(json_path: str, *, restval: bool = False) -> dict[str, list[dict]]:
  """``{split: [{"path", "captions", "id"}]}`` for train/dev/test, in JSON
  order; ValueError naming the first bad entry."""
  if not fs.isfile(json_path):
    raise ValueError(f"--json={json_path!r} does not exist")
  data = fs.read_json(json_path, MAX_JSON_BYTES, what="Karpathy split file")
  images = data.get("images") if isinstance(data, dict) else None
  if not isinstance(images, list):
    raise ValueError(f"{json_path!r} has no 'images' list: not a Karpathy split "
                     "file (dataset_flickr30k.json / dataset_coco.json)")
  wanted = {name: set(kinds) | ({"restval"} if restval and name == "train" else set())
            for name, kinds in SPLITS.items()}
  out = {name: [] for name in SPLITS}
  for n, image in enumerate(images):
    where = f"{json_path} images[{n}]"
    if not isinstance(image, dict) or not isinstance(image.get("filename"), str):
      raise ValueError(f"{where}: an image needs a 'filename'")
    split = image.get("split")
    target = [name for name, kinds in wanted.items() if split in kinds]
    if not target:
      continue
    path = image["filename"]
    if image.get("filepath"):
      path = f"{image['filepath']}/{path}"
    path = image_sources.safe_relative_path(path, where=where)
    sentences = image.get("sentences")
    if not isinstance(sentences, list) or len(sentences) < CAPTIONS_PER_IMAGE:
      raise ValueError(f"{where} ({path}) has "
                       f"{len(sentences) if isinstance(sentences, list) else 'no'} "
                       f"sentences; every image needs at least {CAPTIONS_PER_IMAGE}")
    captions = [_caption(s, f"{where} ({path})")
                for s in sentences[:CAPTIONS_PER_IMAGE]]
    image_id = image.get("cocoid", os.path.splitext(os.path.basename(path))[0])
    out[target[0]].append({"path": path, "captions": captions, "id": str(image_id)})
  return out


def _write_new(path: str, text: str) -> None:
  """Writes `path`, or leaves an identical file; a different one is an error."""
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      if f.read() == text:
        return
    raise ValueError(f"{path!r} exists with other content; use an empty "
                     "--out_dir (nothing is overwritten)")
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def prepare(json_path: str, out_dir: str, *, restval: bool = False,
            image_root: str | None = None) -> dict[str, int]:
  """Writes the split files (module doc) into `out_dir`; returns images per
  split. With `image_root`, every listed image must exist there (checked
  before anything is written)."""
  splits = read_splits(json_path, restval=restval)
  if image_root:
    for name, items in splits.items():
      for item in items:
        if not fs.isfile(fs.join(image_root, item["path"])):
          raise ValueError(f"{name} image {item['path']!r} is not in "
                           f"--image_root={image_root!r}")
  os.makedirs(out_dir, exist_ok=True)
  counts = {}
  for name, items in splits.items():
    if not items:
      continue
    files = {image_sources.IMAGES_SUFFIX: [i["path"] for i in items],
             "_caps.txt": [c for i in items for c in i["captions"]],
             "_image_ids.txt": [i["id"] for i in items]}
    for suffix, lines in files.items():
      _write_new(os.path.join(out_dir, name + suffix),
                 "".join(line + "\n" for line in lines))
    counts[name] = len(items)
  if not counts:
    raise ValueError(f"{json_path!r} has no train, val or test image")
  return counts


def _define_flags(fv) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_string("json", None, "Karpathy split JSON (dataset_coco.json, "
                      "dataset_flickr30k.json).", flag_values=fv)
  flags.DEFINE_string("out_dir", None, "Folder for the split files.", flag_values=fv)
  flags.DEFINE_bool("restval", False, "Add COCO's restval images to train.",
                    flag_values=fv)
  flags.DEFINE_string("image_root", None, "If given: check every image exists "
                      "there first.", flag_values=fv)
  for name in ("json", "out_dir"):
    flags.mark_flag_as_required(name, flag_values=fv)


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m itr_jax.data.karpathy --json=J --out_dir=D [--restval]`."""
  from itr_jax import cli  # pylint: disable=import-outside-toplevel
  args = cli.parse_own_flags(argv, _define_flags, usage=(
      "python -m itr_jax.data.karpathy --json=FILE --out_dir=DIR [--restval]\n"
      "Writes a Karpathy split JSON's splits as {split}_images.txt and "
      "{split}_caps.txt."))
  try:
    counts = prepare(args.json, args.out_dir, restval=args.restval,
                     image_root=args.image_root)
  except ValueError as e:
    print(f"Error: {e}", file=sys.stderr)
    return 1
  print(", ".join(f"{name}: {n} images" for name, n in counts.items()))
  return 0


def run():
  """Console-script entry point (itr-karpathy)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
