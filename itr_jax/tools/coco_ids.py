r"""Write the `--coco_ids` file of `itr_jax.evaluate` for the COCO 5K test split.

  python -m itr_jax.tools.coco_ids --out=coco_testall_ids.npz \
      [--karpathy_json=dataset_coco.json --coco_captions=captions_val2014.json] \
      [--check_captions=/data/coco_precomp/testall_caps.txt]

The .npz holds `image_ids` [5000] (the COCO image id of each row of the
split) and `caption_ids` [25000] (the COCO caption annotation id of each
caption line; 5 consecutive captions per image), which ECCV Caption / CxC
metrics need (`itr_jax.metrics.eccv_caption_metrics`).

Sources, in the order of the standard Karpathy test split (the order of the
SCAN / VSE++ `coco_precomp/testall_*` files):

  * default: the caption ids bundled with the `eccv-caption` package (its
    `coco_test_ids.npy`), each image id from its caption->image annotations;
  * --karpathy_json (Karpathy's `dataset_coco.json`, from caption_datasets.zip)
    with --coco_captions (COCO 2014 `captions_val2014.json`): the `test` images
    in file order, each with the annotation ids of its first 5 sentences,
    matched by text (case and punctuation ignored).

--check_captions compares the split's caption lines with the COCO caption
text of each id (needs --coco_captions) and refuses to write if more than
0.5% differ: a different order would silently mis-score every query.
"""
from __future__ import annotations

import importlib.util
import os
import re

from absl import flags
import numpy as np

from itr_jax import filesystem as fs
from itr_jax import cli

CAPTIONS_PER_IMAGE = 5
MAX_JSON_BYTES = 1 << 30  # dataset_coco.json is ~150 MB
MAX_MISMATCH = 0.005


def normalize(text: str) -> str:
  """Lower-case words only, for matching captions across files.

  >>> normalize("A dog, on a   red sofa.")
  'a dog on a red sofa'
  """
  return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def ids_from_eccv_package() -> tuple[np.ndarray, np.ndarray]:
  """(image_ids [5000], caption_ids [25000]) from the eccv-caption package's files."""
  # Found, not imported: only its data files are read (importing it warns
  # about the optional `ujson`).
  spec = importlib.util.find_spec("eccv_caption")
  if spec is None or not spec.origin:
    raise ValueError("the COCO ids come from the eccv-caption package, which is not "
                     "installed: pip install 'itr_jax[eval]', or pass --karpathy_json "
                     "and --coco_captions.")
  data = os.path.join(os.path.dirname(spec.origin), "data")
  caption_ids = np.load(os.path.join(data, "coco_test_ids.npy")).astype(np.int64)
  caption_to_image = fs.read_json(os.path.join(data, "original_caption_to_image.json"),
                                  MAX_JSON_BYTES, what="eccv-caption data file")
  images = np.array([caption_to_image[str(c)][0] for c in caption_ids], np.int64)
  images = images.reshape(-1, CAPTIONS_PER_IMAGE)
  if not (images == images[:, :1]).all():
    raise ValueError("eccv-caption's coco_test_ids.npy is not grouped 5 captions "
                     "per image; pass --karpathy_json and --coco_captions.")
  return images[:, 0], caption_ids


def load_coco_captions(path: str) -> dict[int, tuple[int, str]]:
  """{annotation id: (image id, caption)} of a COCO captions_*.json."""
  data = fs.read_json(path, MAX_JSON_BYTES, what="--coco_captions file")
  try:
    return {int(a["id"]): (int(a["image_id"]), str(a["caption"]))
            for a in data["annotations"]}
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"--coco_captions {path!r} is not a COCO captions file such as "
                     f"captions_val2014.json: every 'annotations' entry needs an id, "
                     f"image_id and caption ({type(e).__name__}: {e}).") from e


def ids_from_karpathy(karpathy_json: str,
                      coco_captions: dict[int, tuple[int, str]]) -> tuple[np.ndarray, np.ndarray]:
  """(image_ids, caption_ids) of Karpathy's `test` split, matched to COCO annotations."""
  data = fs.read_json(karpathy_json, MAX_JSON_BYTES, what="--karpathy_json file")
  try:
    images = [im for im in data["images"] if im["split"] == "test"]
    tests = [(int(im["cocoid"]), [str(s["raw"]) for s in im["sentences"][:CAPTIONS_PER_IMAGE]])
             for im in images]
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"--karpathy_json {karpathy_json!r} is not a Karpathy split file "
                     f"(dataset_coco.json): every 'images' entry needs split, cocoid and "
                     f"sentences with raw text ({type(e).__name__}: {e}).") from e
  by_image: dict[int, dict[str, list[int]]] = {}
  for ann_id, (image_id, caption) in sorted(coco_captions.items()):
    by_image.setdefault(image_id, {}).setdefault(normalize(caption), []).append(ann_id)
  image_ids, caption_ids, missing = [], [], []
  for cocoid, sentences in tests:
    image_ids.append(cocoid)
    texts = by_image.get(cocoid, {})
    for sentence in sentences:
      candidates = texts.get(normalize(sentence), [])
      if not candidates:
        missing.append((cocoid, sentence))
        caption_ids.append(-1)
      else:
        caption_ids.append(candidates.pop(0))
  if missing:
    raise ValueError(f"{len(missing)} Karpathy test sentences have no COCO caption "
                     f"with the same text, e.g. {missing[:3]}; is --coco_captions "
                     "captions_val2014.json?")
  return np.array(image_ids, np.int64), np.array(caption_ids, np.int64)


def check_captions(caption_ids: np.ndarray, caps_path: str,
                   coco_captions: dict[int, tuple[int, str]]) -> int:
  """Lines of `caps_path` whose text differs from their id's COCO caption; raises above 0.5%."""
  lines = fs.read_text(caps_path, MAX_JSON_BYTES, what="captions file").split("\n")
  if lines and lines[-1] == "":
    lines.pop()  # the final newline ends the last line
  if len(lines) != len(caption_ids):
    raise ValueError(f"{caps_path} has {len(lines)} captions, the ids {len(caption_ids)}.")
  differ = [i for i, (line, cid) in enumerate(zip(lines, caption_ids))
            if normalize(line) != normalize(coco_captions.get(int(cid), (0, ""))[1])]
  if len(differ) > MAX_MISMATCH * len(lines):
    raise ValueError(
        f"{len(differ)} of {len(lines)} captions of {caps_path} differ from the "
        f"COCO caption of their id (first at line {differ[0] + 1}: "
        f"{lines[differ[0]]!r}); the split is not in this order, so the ids "
        "would mis-score it.")
  return len(differ)


def write_ids(out: str, *, karpathy_json: str | None = None,
              coco_captions: str | None = None,
              check_captions_path: str | None = None) -> str:
  """Writes the .npz (see the module docstring); returns a one-line summary."""
  if fs.exists(out):
    raise FileExistsError(f"{out} exists; remove it or choose another --out")
  if karpathy_json and not coco_captions:
    raise ValueError("--karpathy_json needs --coco_captions")
  if check_captions_path and not coco_captions:
    raise ValueError("--check_captions needs --coco_captions (the caption texts)")
  coco = load_coco_captions(coco_captions) if coco_captions else None
  if karpathy_json:
    image_ids, caption_ids = ids_from_karpathy(karpathy_json, coco)
  else:
    image_ids, caption_ids = ids_from_eccv_package()
  checked = ""
  if check_captions_path:
    differ = check_captions(caption_ids, check_captions_path, coco)
    checked = f"; {len(caption_ids) - differ} of {len(caption_ids)} captions match their ids' text"
  with fs.open(out, "wb") as f:  # local or gs://
    np.savez(f, image_ids=image_ids, caption_ids=caption_ids)
  return f"{out}: {len(image_ids)} image ids, {len(caption_ids)} caption ids{checked}"


_OUT = flags.DEFINE_string("out", None, "Output .npz.")
_KARPATHY_JSON = flags.DEFINE_string("karpathy_json", None, "Karpathy's dataset_coco.json.")
_COCO_CAPTIONS = flags.DEFINE_string("coco_captions", None, "COCO captions_val2014.json.")
_CHECK_CAPTIONS = flags.DEFINE_string(
    "check_captions", None, "The split's {split}_caps.txt, to check the order "
    "against (needs --coco_captions).")


def main(argv):
  v = cli.flag_values(argv, {"out": _OUT}, required=["out"])
  print(write_ids(v["out"], karpathy_json=_KARPATHY_JSON.value,
                  coco_captions=_COCO_CAPTIONS.value,
                  check_captions_path=_CHECK_CAPTIONS.value))


def run():
  """Console-script entry point."""
  cli.run(main)


if __name__ == "__main__":
  run()
