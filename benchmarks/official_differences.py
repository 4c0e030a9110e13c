"""Measures the effect of each known difference between itr_jax and the official code.

Uses a trained run (default: the demo, `bash launch/demo.sh`) and its dataset:

  python benchmarks/official_differences.py --workdir=workdirs/demo [--batches=78]

Prints one table per difference (the README's "itr_jax vs the official code"
quotes them):

* RSC snapping (`loss.rsc_snap`): listwise loss and batch hard NDCG with the
  snapped vs the raw float32 relevance, on the first `--batches` training
  batches (epoch 0 order), for the untrained and the trained parameters; and
  the listwise loss on 8 (simulated) devices vs 1, snapped and unsnapped.
* Evaluation ties (`eval.ties`): test-split recall and RSUM, optimistic vs
  official, and how many queries have a score tied with their ground truth.
* Truncation (`data.max_len`), the last partial batch (`data.drop_last`) and
  the vocabulary recipe (`data.vocab_recipe`) on the run's dataset.
"""
from __future__ import annotations

import argparse
import os

# 8 simulated CPU devices for the 1- vs 8-device rows (set before JAX loads).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import optax  # pylint: disable=g-import-not-at-top,wrong-import-position

from itr_jax import losses, metrics, sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.models import scorer  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.data import pipeline, precomputed, vocab as vocab_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.evaluation import evaluate  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.relevance import rsc  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.training import experiment_data, trainer, workdir as workdir_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from itr_jax.evaluation import runs  # pylint: disable=g-import-not-at-top,wrong-import-position


def table(header, rows):
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for row in rows:
    print("| " + " | ".join(str(x) for x in row) + " |")
  print()


def snap_effects(model, params_by_name, batches, mesh):
  """Per batch: listwise loss and hard NDCG, snapped vs not; 1 vs 8 devices."""

  @jax.jit
  def one_device(params, batch):
    img, cap = model.apply({"params": params}, batch["images"], batch["tokens"],
                           batch["lengths"])
    out = {}
    for snap in (True, False):
      r = rsc(batch["image_caption_emb"], batch["caption_emb"], snap=snap)
      _, aux = losses.listwise_itr_loss(img @ cap.T, r)
      out[snap] = aux
    return img, cap, out

  @jax.jit
  def eight_devices(img, cap, batch):
    return {snap: sharding.global_batch_loss(
        scorer.dot_product_scores, None, img, cap, batch["image_caption_emb"],
        batch["caption_emb"], options=losses.LossOptions(rsc_snap=snap), mesh=mesh)[1]
            for snap in (True, False)}

  rows = []
  for name, params in params_by_name.items():
    rel, ndcg, dev = [], [], {True: [], False: []}
    for batch in batches:
      img, cap, out = one_device(params, batch)
      sharded = eight_devices(img, cap, batch)
      snapped, raw = out[True]["listwise"], out[False]["listwise"]
      rel.append(abs(float(raw) - float(snapped)) / float(snapped))
      ndcg.append(max(abs(float(out[True][k]) - float(out[False][k]))
                      for k in ("hard_ndcg_i2t", "hard_ndcg_t2i")))
      for snap in (True, False):
        dev[snap].append(abs(float(sharded[snap]["listwise"]) -
                             float(out[snap]["listwise"])) / float(out[snap]["listwise"]))
    rows.append((name, f"{np.median(rel):.2%}", f"{np.max(rel):.2%}",
                 f"{np.max(ndcg):.1e}", f"{np.max(dev[True]):.1e}",
                 f"{np.max(dev[False]):.1e}"))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="workdirs/demo")
  parser.add_argument("--batches", type=int, default=78)
  args = parser.parse_args()

  config = workdir_lib.load_config(args.workdir)
  data = experiment_data.prepare(config, args.workdir)
  model = trainer.build_model(config, len(data.vocab))
  trained, step = runs.restore_params(config, args.workdir, model, data.train, "best")
  untrained = trainer.create_train_state(config, model, optax.sgd(0.0), data.train).params
  batch_size = config.train.batch_size
  batches = [b for _, b in zip(range(args.batches), data.train_batches(start_step=0))]
  repeats = np.mean([len(np.unique(b["image_ids"])) < len(b["image_ids"]) for b in batches])
  mesh = sharding.create_mesh((("data", -1),), devices=jax.devices()[:8])

  print(f"workdir {args.workdir}, best checkpoint step {step}; {len(batches)} training "
        f"batches of {batch_size} (epoch 0), {repeats:.0%} of them repeat an image\n")
  print("RSC snapping (loss.rsc_snap): |raw - snapped| / snapped listwise loss "
        "(= 1 - S-NDCG), max |diff| of batch hard NDCG; relative |8 devices - 1| of "
        "the listwise loss with each")
  table(["parameters", "listwise rel. diff (median)", "(max)", "hard NDCG max diff",
         "8 vs 1 device, snapped", "8 vs 1 device, unsnapped"],
        snap_effects(model, {"untrained": untrained, f"trained (step {step})": trained},
                     batches, mesh))

  test = experiment_data.load_split(config, data.data_dir, config.data.test_split)
  image_emb, caption_emb = evaluate.encode_eval_split(model, trained, test, data.vocab,
                                                      config)
  sims = np.asarray(image_emb @ caption_emb.T)
  cpi = test.captions_per_image
  rows = []
  for ties in metrics.TIES:
    r = metrics.evaluate_retrieval(sims, captions_per_image=cpi, ties=ties)
    rows.append((ties, f"{r['i2t_r1']:.1f}", f"{r['t2i_r1']:.1f}", f"{r['rsum']:.1f}"))
  own = sims[np.arange(sims.shape[1]) // cpi, np.arange(sims.shape[1])]
  tied_t2i = int(np.sum(np.sum(sims == own, axis=0) > 1))
  print(f"Evaluation ties (eval.ties), test split: {tied_t2i} of {sims.shape[1]} caption "
        "queries have another image tied with their own")
  table(["ties", "i2t R@1", "t2i R@1", "RSUM"], rows)

  n = data.train.num_captions
  rows = [(max_len, pipeline.count_truncated(data.vocab, data.train.captions, max_len), n)
          for max_len in sorted({config.data.max_len, 24, 48})]
  print("Truncation (data.max_len), train captions cut")
  table(["max_len", "truncated", "of"], rows)

  print("Last partial batch (data.drop_last=True drops N mod B captions per epoch)")
  table(["dataset", "train captions N", "B", "dropped per epoch"],
        [(name, count, batch_size, f"{count % batch_size} ({count % batch_size / count:.3%})")
         for name, count in (("this run", n), ("Flickr30K", 145000), ("MS-COCO", 566435))])

  caps = {s: precomputed.read_captions(os.path.join(data.data_dir, f"{s}_caps.txt"))
          for s in (config.data.train_split, config.data.dev_split, config.data.test_split)}
  recipes = {
      "itr_jax": vocab_lib.Vocabulary.build(caps[config.data.train_split]),
      "official": vocab_lib.Vocabulary.build(
          caps[config.data.train_split] + caps[config.data.dev_split],
          min_count=vocab_lib.OFFICIAL_MIN_COUNT, order="first_seen")}
  rows = []
  words = [w for c in caps[config.data.test_split] for w in vocab_lib.tokenize(c)]
  for name, v in recipes.items():
    unk = np.mean([v(w) == v.unk_id for w in words])
    same = v.word2idx == recipes["itr_jax"].word2idx
    rows.append((name, len(v), f"{unk:.3%}", "yes" if same else "no"))
  print("Vocabulary (data.vocab_recipe)")
  table(["recipe", "size (incl. 4 special)", "test tokens -> <unk>",
         "same word ids as itr_jax"], rows)


if __name__ == "__main__":
  main()
