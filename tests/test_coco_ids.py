"""itr_jax.tools.coco_ids: the --coco_ids file from standard COCO id sources."""
import json
import os

import numpy as np
import pytest

import eccv_caption

from itr_jax.metrics import eccv
from itr_jax.tools import coco_ids


def test_eccv_package_ids_are_what_the_eccv_metrics_accept():
  image_ids, caption_ids = coco_ids.ids_from_eccv_package()
  assert image_ids.shape == (5000,) and caption_ids.shape == (25000,)
  annotations = eccv.load_annotations()
  assert set(image_ids.tolist()) == set(annotations.coco_gts["i2t"])
  assert set(caption_ids.tolist()) == set(annotations.coco_gts["t2i"])
  # Row i's 5 captions are captions of image i.
  with open(os.path.join(os.path.dirname(eccv_caption.__file__), "data",
                         "original_image_to_caption.json")) as f:
    image_to_caption = json.load(f)
  for row in (0, 1234, 4999):
    assert set(caption_ids[5 * row:5 * row + 5].tolist()) <= set(
        image_to_caption[str(image_ids[row])])


def _files(tmp_path):
  karpathy = {"images": [
      {"split": "train", "cocoid": 9, "sentences": [{"raw": "x"}] * 5},
      {"split": "test", "cocoid": 2, "sentences": [{"raw": f"Two {i}."} for i in range(5)]},
      {"split": "test", "cocoid": 1, "sentences": [{"raw": f"one, {i}"} for i in range(6)]},
  ]}
  anns = [{"id": 100 + i, "image_id": 1, "caption": f"One {i}"} for i in range(6)]
  anns += [{"id": 200 + i, "image_id": 2, "caption": f"two {4 - i}"} for i in range(5)]
  (tmp_path / "k.json").write_text(json.dumps(karpathy))
  (tmp_path / "c.json").write_text(json.dumps({"annotations": anns}))
  return str(tmp_path / "k.json"), str(tmp_path / "c.json")


def test_karpathy_order_matched_by_text(tmp_path):
  karpathy, captions = _files(tmp_path)
  coco = coco_ids.load_coco_captions(captions)
  image_ids, caption_ids = coco_ids.ids_from_karpathy(karpathy, coco)
  np.testing.assert_array_equal(image_ids, [2, 1])
  np.testing.assert_array_equal(caption_ids, [204, 203, 202, 201, 200, 100, 101, 102, 103, 104])
  caps = tmp_path / "testall_caps.txt"
  caps.write_text("\n".join([f"two {i}" for i in range(5)] + [f"one {i}" for i in range(5)]) + "\n")
  assert coco_ids.check_captions(caption_ids, str(caps), coco) == 0
  caps.write_text("\n".join([f"one {i}" for i in range(5)] + [f"two {i}" for i in range(5)]) + "\n")
  with pytest.raises(ValueError, match="not in this order"):
    coco_ids.check_captions(caption_ids, str(caps), coco)


def test_cli_writes_and_never_overwrites(tmp_path, capsys):
  karpathy, captions = _files(tmp_path)
  out = str(tmp_path / "ids.npz")
  assert coco_ids.main([f"--out={out}", f"--karpathy_json={karpathy}",
                        f"--coco_captions={captions}"]) == 0
  with np.load(out) as ids:
    np.testing.assert_array_equal(ids["image_ids"], [2, 1])
    assert ids["caption_ids"].shape == (10,)
  assert coco_ids.main([f"--out={out}"]) == 1
  assert "exists" in capsys.readouterr().err
