"""Train-step time and memory per backbone, and the time to score a split.

`--part train`: one jit-compiled train step (`make_train_step` with a
one-device mesh, as the trainer runs it; triplet + S-NDCG) per backbone
(`vse` = VSE++, `vse_infty` = VSE-infinity with its recipe: BiGRU + GPO,
AdamW, region/word augmentation; `sgr`, `saf`) on random data of the
paper's shapes (36 x 2048 regions, 300-d words, joint 1024, SGRAF sim_dim
256, BiGRU; captions of 12-20 tokens padded to L = --max_len). Memory is XLA's compiled-program analysis (per device: the
state, the batch and the temporaries; the B x B score matrix of SGR / SAF is
computed `score_chunk` captions at a time with rematerialisation). Time is the
median over `--steps` steps after compilation (`--steps 0`: compile only, no
time), with the process CPU time per step.

`--part eval`: seconds to evaluate `--eval_images` x 5 captions (F30K:
1000 x 5000): encoding every image and caption (measured on
`--eval_sample` images x 5 captions, extrapolated linearly in items), plus
scoring every pair: two-tower models one matrix product of the full size
(measured), cross-attention scorers `similarity.similarity_matrix` (blocks
over all devices) measured on the sample's pairs and extrapolated linearly
in pairs (their work is per pair).

  python benchmarks/backbones.py --part=train --batch_sizes=128,512 --steps=2
  python benchmarks/backbones.py --part=eval --eval_images=1000
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types

import jax
import ml_collections
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from train_step import random_batch  # noqa: E402  pylint: disable=wrong-import-position
import timing  # noqa: E402  pylint: disable=wrong-import-position

from itr_jax import losses  # noqa: E402
from itr_jax import models  # noqa: E402
from itr_jax import sharding  # noqa: E402
from itr_jax.evaluation import similarity  # noqa: E402
from itr_jax.models import scorer  # noqa: E402
from itr_jax.training import defaults  # noqa: E402
from itr_jax.training import augment as augment_lib  # noqa: E402
from itr_jax.training import optimizer  # noqa: E402
from itr_jax.training import train_step as train_step_lib  # noqa: E402
from itr_jax.training import trainer  # noqa: E402


def model_config(name: str, args) -> ml_collections.ConfigDict:
  c = defaults.base_config()
  if name == "vse_infty":
    defaults.vse_infty_recipe(c, "gru")
  if name in ("sgr", "saf"):
    defaults.sgraf_model(c, name)
    c.model.score_chunk = args.score_chunk
  c.model.vocab_size = args.vocab_size
  return c


def init_state(model, config, args):
  """The trainer's initial state for `model` (any backbone's state kind)."""
  shape = types.SimpleNamespace(num_regions=args.regions, feature_dim=args.img_dim)
  tx = optimizer.create_optimizer(config.optim, steps_per_epoch=1000)
  return jax.jit(lambda: trainer.create_train_state(config, model, tx, shape))()


def train_row(name, batch_size, args):
  config = model_config(name, args)
  model = models.create_model(config.model)
  mesh = sharding.create_mesh((("data", -1),))
  augment = augment_lib.make_augment(config.train.augment, seed=0,
                                     mask_id=args.vocab_size - 1, num_ids=args.vocab_size)
  step = train_step_lib.make_train_step(model, losses.LossOptions.from_config(config.loss),
                                        mesh=mesh, augment=augment)
  state = init_state(model, config, args)
  batch = sharding.global_batch(random_batch(np.random.default_rng(0), batch_size, args), mesh)
  t0 = time.time()
  compiled = step.lower(state, batch).compile()
  compile_s = time.time() - t0
  mem = sharding.memory_stats(compiled)
  _, walls, cpus = timing.wall_and_cpu_seconds(timing.step_call(compiled, state, batch),
                                               args.steps)
  return dict(backbone=name, batch=batch_size, compile_s=compile_s,
              ms=1e3 * statistics.median(walls) if walls else float("nan"),
              cpu_s=statistics.median(cpus) if cpus else float("nan"),
              temp_mib=mem["temp"] / 2**20, peak_mib=mem["peak"] / 2**20)


def eval_row(name, args):
  config = model_config(name, args)
  model = models.create_model(config.model)
  rng = np.random.default_rng(0)
  n = args.eval_sample
  batch = random_batch(rng, 5 * n, args)
  variables = init_state(model, config, args).variables()
  enc_img = jax.jit(lambda v, x: model.apply(v, x, method="encode_images"))
  enc_cap = jax.jit(lambda v, t, l: model.apply(v, t, l, method="encode_texts"))

  def encode():
    return jax.block_until_ready((enc_img(variables, batch["images"][:n]),
                                  enc_cap(variables, batch["tokens"], batch["lengths"])))

  encode()  # compile
  t0 = time.perf_counter()
  img, cap = jax.tree.map(np.asarray, encode())
  encode_s = (time.perf_counter() - t0) * args.eval_images / n
  full = args.eval_images * 5 * args.eval_images
  if scorer.is_two_tower(model):
    # One [N, E] x [E, 5N] product at the full size, as evaluate does.
    img = rng.standard_normal((args.eval_images, img.shape[-1]), np.float32)
    cap = rng.standard_normal((5 * args.eval_images, img.shape[-1]), np.float32)
    t0 = time.perf_counter()
    np.dot(img, cap.T)
    score_s, pairs = time.perf_counter() - t0, full
  else:
    block = dict(image_block=args.eval_block, caption_block=args.eval_block, progress=False)
    similarity.similarity_matrix(model, variables, img, cap, **block)  # compile
    t0 = time.perf_counter()
    similarity.similarity_matrix(model, variables, img, cap, **block)
    score_s, pairs = time.perf_counter() - t0, n * 5 * n
  score_full = score_s * full / pairs
  return dict(backbone=name, pairs=pairs, score_s=score_s, us_per_pair=1e6 * score_s / pairs,
              encode_s=encode_s, target=f"{args.eval_images}x{5 * args.eval_images}",
              target_min=(encode_s + score_full) / 60)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--part", choices=("train", "eval"), default="train")
  parser.add_argument("--backbones", default="vse,vse_infty,sgr,saf")
  parser.add_argument("--batch_sizes", default="128")
  parser.add_argument("--steps", type=int, default=2)
  parser.add_argument("--score_chunk", type=int, default=16)
  parser.add_argument("--eval_images", type=int, default=1000)
  parser.add_argument("--eval_sample", type=int, default=64)
  parser.add_argument("--eval_block", type=int, default=64)
  parser.add_argument("--vocab_size", type=int, default=8500)
  parser.add_argument("--max_len", type=int, default=32)
  parser.add_argument("--regions", type=int, default=36)
  parser.add_argument("--img_dim", type=int, default=2048)
  parser.add_argument("--text_emb_dim", type=int, default=384)
  args = parser.parse_args()
  names = args.backbones.split(",")
  print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"load average {os.getloadavg()[0]:.1f}")
  if args.part == "train":
    print("| backbone | B | compile s | ms/step (median) | CPU s/step | XLA temp MiB | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for b in (int(x) for x in args.batch_sizes.split(",")):
      for name in names:
        r = train_row(name, b, args)
        print(f"| {r['backbone']} | {r['batch']} | {r['compile_s']:.0f} | {r['ms']:.0f} | "
              f"{r['cpu_s']:.1f} | {r['temp_mib']:.0f} | {r['peak_mib']:.0f} |", flush=True)
  else:
    print("| backbone | scored pairs (measured) | scoring s | µs/pair | encoding s "
          "(extrapolated) | total for | minutes (extrapolated) |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for name in names:
      r = eval_row(name, args)
      print(f"| {r['backbone']} | {r['pairs']} | {r['score_s']:.2f} | {r['us_per_pair']:.3g} | "
            f"{r['encode_s']:.1f} | {r['target']} | {r['target_min']:.1f} |", flush=True)


if __name__ == "__main__":
  main()
