"""Official recipe configs and imported checkpoints train as the official code.

The official values below are read from the official sources: Listwise_ITR
(9c5d9fa) train.py/data.py/model.py, woodfrog/vse_infty (bigru, 8600f89)
arguments.py/train.py/lib/loss.py/lib/datasets/image_caption.py, SGRAF
(50d0c6f) opts.py/train.py/data.py/model.py.
"""
import json
import os

import ml_collections
import numpy as np
import pytest

from itr_jax.data import pipeline
from itr_jax.data import vocab as vocab_lib
from itr_jax.evaluation import evaluate
from itr_jax.tools import import_torch_checkpoint as importer
from itr_jax.training import defaults
from itr_jax.training import optimizer
from itr_jax.training import plateau
from itr_jax.training import workdir as workdir_lib
from itr_jax.sweeps import declaration

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def config(name):
  """configs/FILE[:ARG]."""
  path, _, arg = name.partition(":")
  return declaration.load_config_file(os.path.join(CONFIGS, path), arg or None)

# (config file:arg) -> (reduction, drop_last, lr_schedule) of its official code.
OFFICIAL = {
    "f30k_vse.py:sndcg": ("mean", False, "repeat"),
    "coco_vse.py:sndcg": ("mean", False, "repeat"),
    "f30k_vse_infty.py:triplet": ("sum", True, "once"),
    "coco_vse_infty.py:sndcg,bert": ("sum", True, "once"),
    "f30k_sgr.py:triplet": ("sum", False, "repeat"),
    "f30k_saf.py:sndcg": ("sum", False, "repeat"),
    "coco_sgr.py:triplet": ("sum", False, "repeat"),
    "coco_saf.py:triplet": ("sum", False, "repeat"),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_recipe_configs_carry_the_official_training_recipe(name):
  c = config(name)
  assert (c.loss.reduction, c.data.drop_last, c.optim.lr_schedule) == OFFICIAL[name]
  assert c.data.vocab_recipe == "official" and c.eval.ties == "official"
  assert c.eval.max_len == 0 and c.optim.grad_clip == 2.0


def test_demo_and_base_configs_keep_todays_recipe():
  for c in (defaults.base_config(),
            config("synthetic_scenes.py")):
    assert (c.loss.reduction, c.data.drop_last, c.optim.lr_schedule) == ("mean", True, "repeat")
    assert c.data.vocab_recipe == "itr_jax" and c.eval.ties == "optimistic"


# The official argparse defaults (what a checkpoint's `opt` holds when the
# run used them), with the paper recipes' command-line values.
SGR_OPT = dict(data_name="f30k_precomp", batch_size=128, num_epochs=40, lr_update=30,
               learning_rate=2e-4, grad_clip=2.0, margin=0.2, max_violation=True,
               img_dim=2048, word_dim=300, embed_size=1024, sim_dim=256, num_layers=1,
               bi_gru=True, no_imgnorm=False, no_txtnorm=False, module_name="SGR",
               sgr_step=3)
SAF_COCO_OPT = dict(SGR_OPT, data_name="coco_precomp", num_epochs=20, lr_update=10,
                    module_name="SAF")
# train_region.sh: --num_epochs=25 --lr_update=15 --learning_rate=.0005
# --vse_mean_warmup_epochs=1 (the parser's other defaults).
VSE_INFTY_OPT = dict(data_name="f30k_precomp", margin=0.2, num_epochs=25, batch_size=128,
                     word_dim=300, embed_size=1024, num_layers=1, grad_clip=2.0,
                     learning_rate=5e-4, lr_update=15, optim="adam", max_violation=True,
                     img_dim=2048, no_imgnorm=False, no_txtnorm=False,
                     precomp_enc_type="basic", vse_mean_warmup_epochs=1, drop=True)


@pytest.mark.parametrize("backbone,opt,recipe_config", [
    ("sgr", SGR_OPT, "f30k_sgr.py:triplet"),
    ("saf", SAF_COCO_OPT, "coco_saf.py:triplet"),
    ("vse_infty", VSE_INFTY_OPT, "f30k_vse_infty.py:triplet"),
])
def test_an_import_resumes_under_its_official_recipe_config(backbone, opt, recipe_config):
  """The imported config differs from the official recipe config of the same
  backbone in no field that resuming checks, so training the import continues
  the official recipe (official loss, reduction, clipping, schedule, last batch)."""
  imported = importer.config_from_opt(opt, backbone)
  recipe = config(recipe_config)
  assert workdir_lib.config_differences(json.loads(imported.to_json()),
                                        json.loads(recipe.to_json())) == []
  assert imported.loss.weight == 0.0 and imported.loss.reduction == "sum"
  assert imported.eval.ties == "official" and imported.eval.max_len == 0


def test_vse_imports_keep_their_own_loss():
  listwise = importer.config_from_opt(dict(tau=0.01, margin=0.2, embed_size=8, word_dim=4),
                                      "vse")
  assert (listwise.loss.reduction, listwise.loss.weight, listwise.data.drop_last) == (
      "mean", 0.5, False)
  vsepp = importer.config_from_opt(dict(margin=0.2, embed_size=8, word_dim=4,
                                        max_violation=True), "vse")
  assert (vsepp.loss.reduction, vsepp.loss.weight) == ("sum", 0.0)


def official_lr(lr0, epoch, lr_update, once):
  """Transcriptions of the official adjust_learning_rate: Listwise_ITR / SGRAF
  `lr0 * 0.1 ** (epoch // lr_update)`; VSE-infinity multiplies by 0.1 when
  `epoch in [lr_update]`, i.e. once."""
  if once:
    return lr0 * (0.1 if epoch >= lr_update else 1.0)
  return lr0 * 0.1 ** (epoch // lr_update)


@pytest.mark.parametrize("schedule", optimizer.LR_SCHEDULES)
def test_learning_rate_schedules_follow_the_official_epochs(schedule):
  cfg = ml_collections.ConfigDict(dict(learning_rate=5e-4, grad_clip=2.0, lr_update=3,
                                       lr_decay=0.1, lr_schedule=schedule))
  fn = optimizer.learning_rate_schedule(cfg, steps_per_epoch=4)
  got = [float(fn(step)) for step in range(4 * 10)]
  want = [official_lr(5e-4, step // 4, 3, schedule == "once") for step in range(4 * 10)]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_evaluation_does_not_cut_the_longest_caption():
  vocab = vocab_lib.Vocabulary.build(["a b c"])
  captions = ["a", "a b c " * 20, "b c"]  # 62 tokens with <start>/<end>
  c = defaults.base_config()
  c.data.max_len = 8
  assert evaluate.eval_max_len(c, vocab, captions) == 62
  assert pipeline.count_truncated(vocab, captions, 62) == 0
  assert pipeline.count_truncated(vocab, captions, 61) == 1
  c.eval.max_len = 12
  assert evaluate.eval_max_len(c, vocab, captions) == 12
  del c.eval["max_len"]  # a config saved before the field: evaluated as then
  assert evaluate.eval_max_len(c, vocab, captions) == 8


def test_official_vocab_recipe_prefers_the_shipped_file(tmp_path):
  data = tmp_path / "data" / "f30k_precomp"
  data.mkdir(parents=True)
  (data / "train_caps.txt").write_text("a dog\n" * 4 + "a cat\n")
  (data / "dev_caps.txt").write_text("a cat\n" * 3)
  built = vocab_lib.resolve_vocab(str(data), recipe="official")
  assert "cat" in built.word2idx and "dog" in built.word2idx  # 4 + 0, 1 + 3 (train + dev)
  shipped = tmp_path / "data" / "vocab"
  shipped.mkdir()
  official = {"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "zebra": 4},
              "idx2word": {"0": "<pad>", "1": "<start>", "2": "<end>", "3": "<unk>",
                           "4": "zebra"}, "idx": 5}
  (shipped / "f30k_precomp_vocab.json").write_text(json.dumps(official))
  assert vocab_lib.shipped_vocab_path(str(data)) == str(shipped / "f30k_precomp_vocab.json")
  vocab = vocab_lib.resolve_vocab(str(data), recipe="official", workdir=str(tmp_path / "w"))
  assert vocab.word2idx == official["word2idx"]
  assert vocab_lib.Vocabulary.load(str(tmp_path / "w" / "vocab.json")) == vocab
  # The itr_jax recipe never reads it.
  assert "zebra" not in vocab_lib.resolve_vocab(str(data)).word2idx


def test_plateau_notice_only_for_backbones_known_to_plateau():
  flat = [0.4] * 5
  assert [plateau.PlateauNotice("vse", 2).end_epoch(x) for x in flat] == [None] * 5
  notice = plateau.PlateauNotice("saf", 2)
  said = [notice.end_epoch(x) for x in flat]
  assert [s is not None for s in said] == [False, False, True, False, False]
  assert "SAF" in said[2] and "7-8" in said[2]
  falling = plateau.PlateauNotice("sgr", 2)
  assert all(falling.end_epoch(x) is None for x in (0.4, 0.39, 0.37, 0.33))
  assert plateau.PlateauNotice("sgr", 0).end_epoch(0.4) is None


# --- loss.reduction against the official VSE-infinity loss -------------------

def _vse_infty_step(reduction):
  """One train step of the VSE-infinity reference fixture (official weights and
  inputs, tests/fixtures/vse_infty_reference.npz), triplet only (lambda = 0)."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from itr_jax import losses  # pylint: disable=import-outside-toplevel
  from itr_jax.training import state as state_lib  # pylint: disable=import-outside-toplevel
  from itr_jax.training import train_step  # pylint: disable=import-outside-toplevel
  import test_vse_infty as ref_test  # pylint: disable=import-outside-toplevel
  ref = dict(np.load(ref_test.FIXTURE))
  model = ref_test._model(ref)  # pylint: disable=protected-access
  images, tokens, lengths, region_mask = ref_test._inputs(ref)  # pylint: disable=protected-access
  variables = ref_test._variables(ref)  # pylint: disable=protected-access
  state = state_lib.TrainState.create(
      apply_fn=model.apply, params=variables["params"], tx=optax.sgd(0.0),
      model_state={"batch_stats": variables["batch_stats"]})
  emb = np.random.default_rng(0).standard_normal((images.shape[0], 5, 4)).astype(np.float32)
  batch = {"images": images, "tokens": tokens, "lengths": lengths, "region_mask": region_mask,
           "image_caption_emb": emb, "caption_emb": emb[:, 0]}
  options = losses.LossOptions(weight=0.0, reduction=reduction)

  def official(params):  # the official ContrastiveLoss, summed over the batch
    (img, cap), _ = model.apply({"params": params, **state.model_state}, images, tokens,
                                lengths, region_mask, train=True, mutable=["batch_stats"])
    return ref_test._official_loss(img, cap)  # pylint: disable=protected-access

  # jit: one compile (eager autodiff compiles each primitive: ~20x the CPU).
  official_norm = jax.jit(lambda p: optax.global_norm(jax.grad(official)(p)))(
      variables["params"])
  step = train_step.make_train_step(model, options)
  _, metrics = step(state, batch)  # donates `state`
  return metrics, float(ref["train_loss"]), float(official_norm), images.shape[0]


def test_sum_reduction_gives_the_official_loss_and_gradient_norm():
  """reduction="sum": the train step's loss is the official summed loss and its
  gradient norm (what clipping compares with 2) the official one, while the
  logged parts stay batch means (the default "mean" = the sum / 2B, B = 3)."""
  got, official_loss, official_norm, b = _vse_infty_step("sum")
  np.testing.assert_allclose(got["loss"], official_loss, rtol=1e-5)
  np.testing.assert_allclose(got["grad_norm"], official_norm, rtol=1e-4)
  np.testing.assert_allclose(got["pairwise"] * 2 * b, official_loss, rtol=1e-5)


def test_reduction_is_validated():
  c = defaults.base_config()
  c.loss.reduction = "max"
  from itr_jax.training import validation  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match="reduction"):
    validation.check_config(c)


def test_sum_reduction_is_2b_times_the_mean_in_both_terms():
  """Both terms scale by 2B (lambda keeps its meaning), on one device and as
  rows of a batch (`listwise_loss_of_rows`, what each device computes)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from itr_jax import losses  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(1)
  scores = jnp.asarray(rng.uniform(-1, 1, (6, 6)), jnp.float32)
  relevance = jnp.asarray(np.where(np.eye(6), 1.0, rng.uniform(0, 1, (6, 6))), jnp.float32)
  for weight in (0.0, 0.3, 1.0):
    mean, aux = losses.listwise_itr_loss(scores, relevance, losses.LossOptions(weight=weight))
    total, aux_sum = losses.listwise_itr_loss(
        scores, relevance, losses.LossOptions(weight=weight, reduction="sum"))
    np.testing.assert_allclose(total, 12 * mean, rtol=1e-6)
    want = (1 - weight) * 12 * aux["pairwise"] + weight * 12 * aux["listwise"]
    np.testing.assert_allclose(total, want, rtol=1e-6)
    assert aux_sum["pairwise"] == aux["pairwise"]


def test_clip_rate_is_the_share_of_steps_whose_gradient_norm_exceeds_the_clip():
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  pending = [{"loss": 1.0, "grad_norm": g} for g in (1.0, 2.5, 2.0, 7.0)]
  summary = trainer._window_summary(pending, 2.0)  # pylint: disable=protected-access
  assert summary["clip_rate"] == 0.5 and summary["grad_norm"] == 3.125
  assert "clip_rate" not in trainer._window_summary(pending, 0.0)  # pylint: disable=protected-access
