"""itr_jax.tools.import_dual_encoder: published CLIP / SigLIP weights into a
workdir that fine-tuning (init_from) and evaluation restore."""
import json
import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from itr_jax.tools import import_dual_encoder
from itr_jax.training import init_from
from itr_jax.training import trainer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "dual_encoder")


def restore(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  model = trainer.build_model(config, config.model.vocab_size)
  abstract = jax.eval_shape(lambda: trainer.create_train_state(
      config, model, optax.identity(), None).params)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                          abstract)
  params, _ = init_from.load_params(workdir, abstract)
  return config, model, params


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_hf_directory_round_trip(tmp_path, family):
  workdir = str(tmp_path / "run")
  info = import_dual_encoder.import_checkpoint(os.path.join(FIXTURES, f"{family}_hf"), workdir)
  assert info["family"] == family and info["variant"] == "tiny"
  config, model, params = restore(workdir)
  assert sorted(os.listdir(config.model.tokenizer)) == (
      ["merges.txt", "vocab.json"] if family == "clip" else ["spiece.model"])
  ref = np.load(os.path.join(FIXTURES, f"{family}_reference.npz"))
  img, txt = jax.jit(lambda p, *x: model.apply({"params": p}, *x))(
      params, ref["images"], ref["tokens"], ref["lengths"])
  np.testing.assert_allclose(img, ref["image_emb"], atol=2e-6)
  np.testing.assert_allclose(txt, ref["text_emb"], atol=2e-6)


def test_openai_and_big_vision_need_a_tokenizer_and_refuse_non_empty_workdirs(tmp_path):
  for name in ("clip_openai.pt", "siglip_big_vision.npz"):
    with pytest.raises(ValueError, match="carries no tokenizer; give --tokenizer"):
      import_dual_encoder.import_checkpoint(os.path.join(FIXTURES, name), str(tmp_path / "w"),
                                            vision_heads=2, text_heads=2)
  assert not os.path.exists(tmp_path / "w")
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "x").write_text("keep")
  with pytest.raises(ValueError, match="is not empty"):
    import_dual_encoder.import_checkpoint(os.path.join(FIXTURES, "clip_hf"),
                                          str(tmp_path / "busy"))
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"PK\x03\x04garbage")
  with pytest.raises(ValueError, match="--checkpoint .* is not a readable NumPy .npz"):
    import_dual_encoder.import_checkpoint(str(bad), str(tmp_path / "w2"),
                                          tokenizer=os.path.join(FIXTURES, "siglip_hf"))


def test_big_vision_with_tokenizer(tmp_path):
  workdir = str(tmp_path / "bv")
  import_dual_encoder.import_checkpoint(
      os.path.join(FIXTURES, "siglip_big_vision.npz"), workdir,
      tokenizer=os.path.join(FIXTURES, "siglip_hf", "spiece.model"))
  _, _, params = restore(workdir)
  assert float(params["logit_bias"]) == pytest.approx(
      float(np.load(os.path.join(FIXTURES, "siglip_big_vision.npz"))["params/b"][0]))


def test_a_failed_import_writes_nothing_and_the_retry_works(tmp_path, full_disk_on_checkpoint_save):
  """A full disk while the checkpoint is written leaves no workdir behind (the
  import writes a staging copy and renames it), so running it again works."""
  workdir = str(tmp_path / "run")
  with pytest.raises(OSError, match="No space left"):
    import_dual_encoder.import_checkpoint(os.path.join(FIXTURES, "clip_hf"), workdir)
  full_disk_on_checkpoint_save.undo()
  assert os.listdir(tmp_path) == []
  import_dual_encoder.import_checkpoint(os.path.join(FIXTURES, "clip_hf"), workdir)
  config, _, _ = restore(workdir)
  assert config.model.tokenizer == os.path.join(workdir, "tokenizer")
  assert sorted(os.listdir(config.model.tokenizer)) == ["merges.txt", "vocab.json"]
