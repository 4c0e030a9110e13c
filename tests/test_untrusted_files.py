"""Every file itr_jax reads whole may be hostile or broken: too large, not
UTF-8, not JSON, nested past the parser's recursion limit, or JSON of the
wrong shape. Each reader answers with one ValueError naming the file (or, for
caches and records it can rebuild, treats the file as absent), never another
exception, and reads no more than its limit.
"""
import json
import os

import numpy as np
import pytest

from itr_jax import filesystem as fs
from itr_jax.data import caption_embeddings
from itr_jax.data import image_sources
from itr_jax.data import karpathy
from itr_jax.data import precomputed
from itr_jax.data import vocab as vocab_lib
from itr_jax.report import collect
from itr_jax.report import examples
from itr_jax.sweeps import members
from itr_jax.data import synthetic_scenes
from itr_jax.text_encoders import bert
from itr_jax.text_encoders import wordpiece
from itr_jax.tools import coco_ids
from itr_jax.training import integrity
from itr_jax.training import workdir as workdir_lib

DEEP = b"[" * 100_000 + b"]" * 100_000  # past Python's recursion limit
BAD_CONTENTS = {"not json": b"{garbage", "not utf-8": b'{"a": "\xff\xfe"}',
                "too deep": DEEP, "an array": b"[1, 2]", "a string": b'"x"'}


def test_read_json_bounds_the_read_and_names_the_file(tmp_path):
  path = str(tmp_path / "f.json")
  fs.atomic_write_bytes(path, b'{"a": [1, 2]}')
  assert fs.read_json(path, 13) == {"a": [1, 2]}
  with pytest.raises(fs.TooLarge, match=r"config '.*f.json' holds more than 12 bytes"):
    fs.read_json(path, 12, what="config")
  for name, content in BAD_CONTENTS.items():
    if name in ("an array", "a string"):
      continue  # valid JSON: its shape is the caller's to check
    fs.atomic_write_bytes(path, content)
    problem = "UTF-8 text" if name == "not utf-8" else "valid JSON"
    with pytest.raises(ValueError, match=rf"config '.*f.json' is not {problem}"):
      fs.read_json(path, len(content), what="config")


def _write(path, content: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(content)
  return path


def _run_config(tmp_path, content):
  workdir = str(tmp_path / "run")
  _write(os.path.join(workdir, workdir_lib.CONFIG_FILE), content)
  return lambda: workdir_lib.load_config(workdir)


def _integrity_record(tmp_path, content):
  step = str(tmp_path / "step")
  _write(os.path.join(step, integrity.RECORD_FILE), content)
  return lambda: integrity.read_record(step)


def _vocabulary(tmp_path, content):
  path = _write(str(tmp_path / "vocab.json"), content)
  return lambda: vocab_lib.Vocabulary.load(path)


def _karpathy(tmp_path, content):
  path = _write(str(tmp_path / "dataset_coco.json"), content)
  return lambda: karpathy.read_splits(path)


def _coco_captions(tmp_path, content):
  path = _write(str(tmp_path / "captions_val2014.json"), content)
  return lambda: coco_ids.load_coco_captions(path)


def _coco_karpathy(tmp_path, content):
  path = _write(str(tmp_path / "dataset_coco.json"), content)
  return lambda: coco_ids.ids_from_karpathy(path, {})


def _evaluation_result(tmp_path, content):
  workdir = str(tmp_path / "run")
  _write(os.path.join(workdir, "eval_test.json"), content)
  return lambda: collect.read_test(workdir)


def _caption_sidecar(tmp_path, content):
  caps = _write(str(tmp_path / "train_caps.txt"), b"a dog\n")
  emb = str(tmp_path / "train_caps_emb.npy")
  np.save(emb, np.zeros((1, 4), np.float32))
  _write(caption_embeddings.sidecar_path(emb), content)
  return lambda: caption_embeddings.check_sidecar(emb, caps, 1)


def _sweep_record(tmp_path, content):
  sweep_dir = str(tmp_path / "sweep")
  _write(os.path.join(sweep_dir, members.SWEEP_FILE), content)
  return lambda: members.read_manifest(sweep_dir)


def _dataset_manifest(tmp_path, content):
  path = _write(str(tmp_path / "data" / synthetic_scenes.MANIFEST), content)
  return lambda: synthetic_scenes.read_manifest(path)


def _bert_config(tmp_path, content):
  path = _write(str(tmp_path / "bert" / "config.json"), content)
  return lambda: bert.BertConfig.from_json_file(path)


def _model_config(tmp_path, content):
  path = _write(str(tmp_path / "minilm" / "tokenizer_config.json"), content)
  return lambda: wordpiece.read_model_json(path)


# reader -> (how to open it on a file of given bytes, the module limit to shrink
# (None: a literal limit, not shrunk here), what the message must name).
READERS = {
    "run config": (_run_config, (workdir_lib, "MAX_CONFIG_BYTES"), "config.json"),
    "integrity record": (_integrity_record, (integrity, "MAX_RECORD_BYTES"),
                         integrity.RECORD_FILE),
    "vocabulary": (_vocabulary, (vocab_lib, "MAX_VOCAB_BYTES"), "vocab.json"),
    "karpathy split": (_karpathy, (karpathy, "MAX_JSON_BYTES"), "dataset_coco.json"),
    "coco captions": (_coco_captions, (coco_ids, "MAX_JSON_BYTES"), "captions_val2014.json"),
    "coco ids' karpathy": (_coco_karpathy, (coco_ids, "MAX_JSON_BYTES"), "dataset_coco.json"),
    "evaluation result": (_evaluation_result, (collect, "MAX_REPORT_BYTES"), "eval_test.json"),
    "caption sidecar": (_caption_sidecar, (caption_embeddings, "MAX_SIDECAR_BYTES"),
                        "train_caps_emb.json"),
    "sweep record": (_sweep_record, None, members.SWEEP_FILE),
    "dataset manifest": (_dataset_manifest, (synthetic_scenes, "MAX_MANIFEST_BYTES"),
                         synthetic_scenes.MANIFEST),
    "BERT config": (_bert_config, None, "config.json"),
}
# Readers whose callers check the JSON's shape: only bytes that are not JSON
# (or too many) are theirs to refuse.
SHAPE_FREE_READERS = {"model config": (_model_config, (wordpiece, "MAX_CONFIG_BYTES"),
                                       "tokenizer_config.json")}


@pytest.mark.parametrize("reader", sorted({**READERS, **SHAPE_FREE_READERS}))
@pytest.mark.parametrize("damage", sorted(BAD_CONTENTS) + ["too large"])
def test_a_damaged_file_is_one_value_error_naming_it(reader, damage, tmp_path, monkeypatch):
  opener, limit, name = {**READERS, **SHAPE_FREE_READERS}[reader]
  if damage == "too large":
    if limit is None:
      pytest.skip("a literal limit; fs.read_json's limit is tested through the other readers")
    monkeypatch.setattr(*limit, 64)
    content = json.dumps({"x": "y" * 100}).encode()
  else:
    content = BAD_CONTENTS[damage]
  if reader in SHAPE_FREE_READERS and damage in ("an array", "a string"):
    assert opener(tmp_path, content)() == json.loads(content)
    return
  if reader == "evaluation result" and damage in ("an array", "a string"):
    assert opener(tmp_path, content)() is None  # holds no protocol: no test metrics
    return
  with pytest.raises(ValueError) as raised:
    opener(tmp_path, content)()
  assert name in str(raised.value), str(raised.value)
  assert "\n" not in str(raised.value)


def test_text_files_and_thumbnails_within_their_limits(tmp_path, monkeypatch):
  caps = _write(str(tmp_path / "test_caps.txt"), b"a dog\na cat\n")
  images = _write(str(tmp_path / "test_images.txt"), b"a.jpg\nb.jpg\n")
  assert precomputed.read_captions(caps) == ["a dog", "a cat"]
  assert image_sources.read_image_list(images) == ["a.jpg", "b.jpg"]
  monkeypatch.setattr(precomputed, "MAX_TEXT_BYTES", 8)
  monkeypatch.setattr(image_sources, "MAX_LIST_BYTES", 8)
  with pytest.raises(ValueError, match=r"captions file '.*test_caps.txt' holds more than 8"):
    precomputed.read_captions(caps)
  with pytest.raises(ValueError, match=r"image list '.*test_images.txt' holds more than 8"):
    image_sources.read_image_list(images)
  _write(images, b"\xff\xfe.jpg\n")
  monkeypatch.setattr(image_sources, "MAX_LIST_BYTES", 64)
  with pytest.raises(ValueError, match="is not UTF-8 text"):
    image_sources.read_image_list(images)
  # A thumbnail of an image file over the byte limit, or of a PNG whose header
  # claims more pixels than the limit, is "no thumbnail" without decoding it.
  from PIL import Image  # pylint: disable=import-outside-toplevel
  png = str(tmp_path / "big.png")
  Image.new("RGB", (64, 64)).save(png)
  assert "data:image/jpeg" in examples.thumbnail_html(png)
  monkeypatch.setattr(image_sources, "MAX_IMAGE_BYTES", 16)
  assert "holds more than 16 bytes" in examples.thumbnail_html(png)
  monkeypatch.setattr(image_sources, "MAX_IMAGE_BYTES", 1 << 20)
  monkeypatch.setattr(image_sources, "MAX_PIXELS", 64 * 63)
  assert "64x64 pixels, over the 4032-pixel limit" in examples.thumbnail_html(png)


def test_bert_config_sizes_are_bounded(tmp_path):
  path = _write(str(tmp_path / "config.json"), json.dumps(
      {"vocab_size": 30522, "hidden_size": 1 << 30, "num_hidden_layers": 12,
       "num_attention_heads": 12, "intermediate_size": 3072}).encode())
  with pytest.raises(ValueError, match=r"hidden_size must be an integer in \[1, 16384\]"):
    bert.BertConfig.from_json_file(path)
  with pytest.raises(ValueError, match=r"num_hidden_layers must be an integer .* got \[12\]"):
    bert.BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=[12],
                    num_attention_heads=2, intermediate_size=8)


def test_read_bounded_follows_a_growing_file_to_its_limit(tmp_path, monkeypatch):
  """A file that grows after its size is taken is read on only to the limit."""
  path = _write(str(tmp_path / "log"), b"x" * 100)
  monkeypatch.setattr(fs, "getsize", lambda p: 10)  # the size before it grew
  assert fs.read_bounded(path, 100) == b"x" * 100
  with pytest.raises(fs.TooLarge, match="holds more than 99 bytes"):
    fs.read_bounded(path, 99)


def test_read_npz_checks_every_member_header_before_reading(tmp_path):
  import io  # pylint: disable=import-outside-toplevel
  import zipfile  # pylint: disable=import-outside-toplevel
  from numpy.lib import format as npy  # pylint: disable=import-outside-toplevel
  good = str(tmp_path / "good.npz")
  np.savez(good, a=np.arange(3), b=np.ones((2, 2), np.float32))
  arrays = fs.read_npz(good, 1 << 20)
  np.testing.assert_array_equal(arrays["a"], np.arange(3))
  assert arrays["b"].dtype == np.float32

  def npz_with(name, header: dict, data: bytes) -> str:
    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, header)
    path = str(tmp_path / f"{name}.npz")
    with zipfile.ZipFile(path, "w") as z:
      z.writestr(f"{name}.npy", buffer.getvalue() + data)
    return path

  huge = npz_with("huge", {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)},
                  b"\0" * 64)
  with pytest.raises(ValueError, match=r"member 'huge.npy' declares a \(1099511627776,\) "
                                       r"float64 array, more than its"):
    fs.read_npz(huge, 1 << 20, what="ids")
  objects = npz_with("objects", {"descr": "|O", "fortran_order": False, "shape": (1,)},
                     b"\0" * 8)
  with pytest.raises(ValueError, match="member 'objects.npy' holds Python objects"):
    fs.read_npz(objects, 1 << 20)
  with pytest.raises(fs.TooLarge, match="holds more than 16 bytes"):
    fs.read_npz(good, 16)
  not_zip = _write(str(tmp_path / "x.npz"), b"PK\x03\x04garbage")
  with pytest.raises(ValueError, match="is not a readable NumPy .npz"):
    fs.read_npz(not_zip, 1 << 20)


def test_read_npz_fuzz(tmp_path):
  """Random byte mutations of plain and compressed .npz files: each loads or
  raises ValueError (a damaged deflate stream raised zlib.error, an unknown
  compression method NotImplementedError, before they were caught)."""
  import io  # pylint: disable=import-outside-toplevel
  import random  # pylint: disable=import-outside-toplevel
  rng = random.Random(1)
  originals = []
  for save in (np.savez, np.savez_compressed):
    buffer = io.BytesIO()
    save(buffer, image_ids=np.arange(50), caption_ids=np.arange(250.0).reshape(50, 5))
    originals.append(buffer.getvalue())
  path = str(tmp_path / "x.npz")
  loaded = 0
  for _ in range(2000):
    data = bytearray(rng.choice(originals))
    for _ in range(rng.randint(1, 4)):
      at = rng.randrange(len(data))
      kind = rng.random()
      if kind < 0.5:
        data[at] = rng.randrange(256)
      elif kind < 0.7:
        del data[at:at + rng.randint(1, 16)]
      elif kind < 0.85:
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
      else:
        data[at:at + 4] = rng.choice([b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\xff" * 4])
    _write(path, bytes(data))
    try:
      arrays = fs.read_npz(path, 1 << 20)
    except ValueError:
      continue
    loaded += 1
    assert all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays.values())
  assert 0 < loaded < 2000


@pytest.mark.parametrize("vocab,merges,problem", [
    (b'{"<|startoftext|>": "0", "<|endoftext|>": 1}', b"", "must map tokens to ids"),
    (b'["<|startoftext|>", "<|endoftext|>"]', b"", "must map tokens to ids"),
    (DEEP, b"", "cannot read the CLIP tokenizer files"),
    (b'{"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2}', b"#version\na b\n",
     "do not fit together"),
], ids=["a string id", "a list", "too deep", "merges outside the vocabulary"])
def test_clip_tokenizer_files_that_do_not_hold_a_tokenizer(tmp_path, vocab, merges, problem):
  """Before, these raised TypeError, RecursionError and a plain Exception."""
  from itr_jax.text_encoders import clip_tokenizers  # pylint: disable=import-outside-toplevel
  _write(str(tmp_path / "vocab.json"), vocab)
  _write(str(tmp_path / "merges.txt"), merges)
  with pytest.raises(ValueError, match=problem):
    clip_tokenizers.ClipBpe(str(tmp_path))
