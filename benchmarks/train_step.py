"""Throughput of one jit-compiled train step in the paper's configuration.

One step = both encoders forward (36 x 2048 BUTD regions -> FC 1024 -> max
pool; 300-d words -> GRU 1024), RSC relevance, `listwise_itr_loss` (triplet +
S-NDCG, lambda = 0.5), backward, clip + Adam update: the real
`itr_jax.training.train_step.make_train_step` on random data of the paper's
shapes (vocab 8500, captions of 12-20 tokens padded to L = 32).

Reports the median wall time over `--steps` steps after compilation, and the
process CPU time per step (robust to other jobs sharing the machine). `--part
gru` times the caption GRU alone (forward + backward) for the implementation
choices behind `itr_jax.models.GRU`; `--part image` the image tower alone
(forward + backward to its params), plain autodiff of `nn.Dense` + `max_pool`
against the fused `dense_max_pool` that `ImageEncoder` uses on one CPU device. `--part loss`
times `listwise_itr_loss` fwd+bwd alone (the loss's share of a step).

`--backbone vse_infty` times VSE-infinity's step instead (region MLP with
BatchNorm + GPO, BiGRU + GPO, AdamW, 20% region drop and caption-word
augmentation in the step); the table adds XLA's per-device peak memory
(arguments + outputs - donated + temporaries) of the compiled step.

  python benchmarks/train_step.py                       # B = 128 and 512
  python benchmarks/train_step.py --backbone=vse_infty --batch_sizes=128
  python benchmarks/train_step.py --batch_sizes=128 --steps=10 --part=gru
  python benchmarks/train_step.py --part=image
  python benchmarks/train_step.py --batch_sizes=1024 --rank_method=sorted
  python benchmarks/train_step.py --batch_sizes=128,1024 --part=train,loss \
      --rank_method=sorted      # step vs its loss alone (the loss share)
"""
from __future__ import annotations

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import timing

from itr_jax import losses
from itr_jax import models
from itr_jax import sharding
from itr_jax.training import augment as augment_lib
from itr_jax.training import defaults
from itr_jax.training import optimizer
from itr_jax.training import state as state_lib
from itr_jax.training import train_step as train_step_lib


def random_batch(rng: np.random.Generator, batch: int, args) -> dict:
  """A batch with the shapes and dtypes the data pipeline produces."""
  lengths = rng.integers(12, 21, size=batch).astype(np.int32)
  tokens = rng.integers(1, args.vocab_size, size=(batch, args.max_len))
  tokens = np.where(np.arange(args.max_len)[None] < lengths[:, None], tokens, 0)
  return {
      "images": rng.standard_normal((batch, args.regions, args.img_dim),
                                    np.float32),
      "tokens": tokens.astype(np.int32),
      "lengths": lengths,
      "image_caption_emb": rng.standard_normal(
          (batch, 5, args.text_emb_dim), np.float32),
      "caption_emb": rng.standard_normal((batch, args.text_emb_dim), np.float32),
  }


def bench_train_step(batch_size: int, args):
  """(compile + 1st s, wall s list, CPU s list, peak MiB) of `args.backbone`'s step."""
  config = defaults.base_config()
  if args.backbone == "vse_infty":
    defaults.vse_infty_recipe(config)
  config.model.vocab_size = args.vocab_size
  config.loss.rank_method = args.rank_method
  model = models.create_model(config.model)
  batch = jax.device_put(random_batch(np.random.default_rng(0), batch_size,
                                      args))
  variables = dict(jax.jit(model.init)(jax.random.key(0), batch["images"],
                                       batch["tokens"], batch["lengths"]))
  params = variables.pop("params")
  tx = optimizer.create_optimizer(config.optim, steps_per_epoch=1000)
  # As the trainer's state: any BatchNorm statistics, and the step's key.
  state = train_step_lib.TrainState.create(
      apply_fn=model.apply, params=params, tx=tx, model_state=variables,
      rng=state_lib.initial_rng(0))
  augment = augment_lib.make_augment(
      config.train.augment, seed=0, mask_id=args.vocab_size - 1,
      num_ids=args.vocab_size)
  train_step = train_step_lib.make_train_step(
      model, losses.LossOptions.from_config(config.loss), augment=augment)
  peak = sharding.memory_stats(
      train_step.lower(state, batch).compile())["peak"] / 2**20
  return (*timing.wall_and_cpu_seconds(timing.step_call(train_step, state, batch),
                                       args.steps), peak)


def bench_loss(batch_size: int, args):
  """`listwise_itr_loss` fwd+bwd alone, w.r.t. [B, 1024] embeddings.

  The loss share of a step: same config.loss as `bench_train_step` (the paper's
  VSE++ settings), relevance given (RSC is part of the step, not of this),
  with the logged aux metrics.
  """
  from itr_jax.losses import ranks  # pylint: disable=g-import-not-at-top
  config = defaults.base_config()
  config.loss.rank_method = args.rank_method
  options = losses.LossOptions.from_config(config.loss)
  rng = np.random.default_rng(0)
  emb = rng.standard_normal((2, batch_size, 1024)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  rel = jnp.asarray(rng.random((batch_size, batch_size), dtype=np.float32))
  # Relevance is an argument: as a closed-over constant, XLA would fold the
  # IDCG sorts at compile time. The aux metrics (hard NDCG) are returned, as
  # the train step logs them.
  grad = jax.jit(jax.value_and_grad(
      lambda v, t, r: losses.listwise_itr_loss(v @ t.T, r, options),
      argnums=(0, 1), has_aux=True))
  v, t = jax.device_put(emb[0]), jax.device_put(emb[1])
  _, walls, cpus = timing.wall_and_cpu_seconds(lambda: grad(v, t, rel), args.steps)
  name = ranks.resolve_rank_method(args.rank_method, batch_size)
  return [(f"{name} ({args.rank_method})", walls, cpus)]


class _FlaxGRUCellEncoder(nn.Module):
  """Baseline: `nn.RNN(nn.GRUCell)` over all L steps, plain autodiff."""
  hidden: int

  @nn.compact
  def __call__(self, words, lengths):
    states = nn.RNN(nn.GRUCell(self.hidden))(words, seq_lengths=lengths)
    return jnp.take_along_axis(states, (lengths - 1)[:, None, None], 1)[:, 0]


class _ItrGRUEncoder(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, words, lengths):
    return models.GRU(self.hidden)(words, lengths)[1]


def bench_gru(batch_size: int, args):
  """Rows (name, wall s, CPU s per call) for the caption GRU, fwd + bwd."""
  rng = np.random.default_rng(0)
  words = jnp.asarray(rng.standard_normal(
      (batch_size, args.max_len, 300), np.float32))
  lengths = jnp.asarray(rng.integers(12, 21, batch_size).astype(np.int32))
  full = jnp.full_like(lengths, args.max_len)
  rows = []
  for name, module, lens in [
      ("itr_jax GRU (fused input proj, skip padding, hand VJP)",
       _ItrGRUEncoder(1024), lengths),
      ("itr_jax GRU, no padding to skip (all lengths = L)",
       _ItrGRUEncoder(1024), full),
      ("flax nn.RNN(nn.GRUCell), autodiff", _FlaxGRUCellEncoder(1024),
       lengths)]:
    params = jax.jit(module.init)(jax.random.key(0), words, lens)

    @jax.jit
    def grad(params, lens, module=module):
      return jax.grad(lambda p: jnp.sum(module.apply(p, words, lens) ** 2))(
          params)

    _, walls, cpus = timing.wall_and_cpu_seconds(lambda: grad(params, lens), args.steps)
    rows.append((name, walls, cpus))
  return rows


def bench_image_tower(batch_size: int, args):
  """Rows (name, wall s, CPU s per call) for the image tower, fwd + bwd."""
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.standard_normal(
      (batch_size, args.regions, args.img_dim), np.float32))
  cotangent = jnp.asarray(rng.standard_normal((batch_size, 1024), np.float32))
  rows = []
  for name, fused in [("nn.Dense + max_pool, plain autodiff", False),
                      ("dense_max_pool (running max, gathered dW)", True)]:
    encoder = models.ImageEncoder(embed_size=1024, fused_max_pool=fused)
    params = jax.jit(encoder.init)(jax.random.key(0), images)

    @jax.jit
    def grad(params, encoder=encoder):
      return jax.grad(lambda p: jnp.sum(encoder.apply(p, images) * cotangent))(
          params)

    _, walls, cpus = timing.wall_and_cpu_seconds(lambda: grad(params), args.steps)
    rows.append((name, walls, cpus))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_sizes", default="128,512")
  parser.add_argument("--steps", type=int, default=5,
                      help="timed steps after compilation (median reported)")
  parser.add_argument("--part", default="train",
                      help="comma-separated among train, gru, image, loss; or all")
  parser.add_argument("--rank_method", default="auto",
                      help="config.loss.rank_method: auto, chunked or sorted")
  parser.add_argument("--backbone", choices=("vse", "vse_infty"), default="vse",
                      help="config.model.name (vse_infty: with its recipe)")
  parser.add_argument("--vocab_size", type=int, default=8500)
  parser.add_argument("--max_len", type=int, default=32)
  parser.add_argument("--regions", type=int, default=36)
  parser.add_argument("--img_dim", type=int, default=2048)
  parser.add_argument("--text_emb_dim", type=int, default=768,
                      help="dimension of the frozen caption embeddings (RSC)")
  args = parser.parse_args()
  sizes = [int(b) for b in args.batch_sizes.split(",")]
  chosen = set(args.part.split(","))
  if "all" in chosen:
    chosen = {"train", "gru", "image", "loss"}
  if not chosen <= {"train", "gru", "image", "loss"}:
    parser.error(f"--part: unknown {sorted(chosen - {'train', 'gru', 'image', 'loss'})}")
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.devices()[0].device_kind}, {args.steps} timed steps")
  if "train" in chosen:
    print(f"\nbackbone {args.backbone}")
    print("\n| batch | ms/step (median) | steps/s | min ms | CPU s/step "
          "| compile+1st s | XLA peak MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for b in sizes:
      first, walls, cpus, peak = bench_train_step(b, args)
      med = statistics.median(walls)
      print(f"| {b} | {1e3 * med:.0f} | {1 / med:.2f} | "
            f"{1e3 * min(walls):.0f} | {statistics.median(cpus):.2f} | "
            f"{first:.1f} | {peak:.0f} |", flush=True)
  parts = (("gru", "caption GRU fwd+bwd (H=1024, L=32)", bench_gru, 2),
           ("image", "image tower fwd+bwd (36 x 2048 -> 1024, max)",
            bench_image_tower, 3),
           ("loss", "listwise loss fwd+bwd, S-NDCG kernel (rank_method)",
            bench_loss, 3))
  for part, title, bench, cpu_digits in parts:
    if part not in chosen:
      continue
    print(f"\n| batch | {title} | ms (median) | min ms | CPU s/call |")
    print("|---:|---|---:|---:|---:|")
    for b in sizes:
      for name, walls, cpus in bench(b, args):
        print(f"| {b} | {name} | {1e3 * statistics.median(walls):.0f} | "
              f"{1e3 * min(walls):.0f} | {statistics.median(cpus):.{cpu_digits}f} |",
              flush=True)


if __name__ == "__main__":
  main()
