"""One command for a GPU or TPU: the numbers that matter there, in one Markdown table.

Needs only jax, flax, optax, orbax-checkpoint and ml-collections (no
TensorFlow). Rows, each measured after compilation (median of `--repeats`
calls, `jax.block_until_ready`):

* `loss`: `listwise_itr_loss` (triplet + S-NDCG) forward + backward w.r.t.
  [B, 1024] image and caption embeddings, with the "chunked" and "sorted"
  smooth-rank kernels, B = 1K ... 32K;
* `ranks`: the sorted kernel's ranks alone (`sorted_smooth_ranks` fwd + bwd on
  [B, B]) with its sequential `lax.scan` and its associative scan (the
  sequential one may be latency-bound on accelerators);
* `train`: one train step (`make_train_step`, triplet + S-NDCG, one-device
  mesh) of each backbone at the paper's dims (36 x 2048 regions, 300-d words,
  1024 joint, SGRAF sim 256), B = 128 and 512;
* `eval`: SGR / SAF evaluation throughput: image-caption pairs scored per
  second by `similarity.similarity_matrix` (blocks of `--eval_block`);
* the CLIP / SigLIP dual encoders' train step, when `itr_jax.models` has them.

Memory is the compiled program's footprint on the device (XLA's memory
analysis: arguments + outputs - donated + temporaries), the same figure on
every backend. A row that would push the run past `--budget_s` in total, or a
chunked-kernel row predicted (8x the previous B's time: O(B^3)) to take
longer than `--max_row_s`, is listed as skipped with the reason.

  python benchmarks/accelerator.py                   # GPU/TPU: < 8 minutes
  python benchmarks/accelerator.py --tiny            # CPU smoke run, tiny sizes
  python benchmarks/accelerator.py --out=table.md    # also write the table
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backbones  # noqa: E402  pylint: disable=wrong-import-position
from train_step import random_batch  # noqa: E402  pylint: disable=wrong-import-position
import timing  # noqa: E402  pylint: disable=wrong-import-position

from itr_jax import losses  # noqa: E402
from itr_jax import models  # noqa: E402
from itr_jax import sharding  # noqa: E402
from itr_jax.evaluation import similarity  # noqa: E402
from itr_jax.losses import sorted_ranks  # noqa: E402
from itr_jax.models import registry  # noqa: E402
from itr_jax.training import defaults  # noqa: E402
from itr_jax.training import train_step as train_step_lib  # noqa: E402

TWO_TOWER_AND_SGRAF = ("vse", "vse_infty", "sgr", "saf")
DUAL_ENCODERS = ("clip", "siglip")

# Paper dims (full run) and a CPU smoke size (--tiny) of every part.
SIZES = {
    False: dict(loss_batches=(1024, 2048, 4096, 8192, 16384, 32768), dim=1024,
                train_batches=(128, 512), regions=36, img_dim=2048, vocab_size=8500,
                max_len=32, text_emb_dim=384, model={}, eval_sample=128,
                eval_block=64, dual_variant="B/16", dual_batches=(128,),
                dual_dtype="bfloat16"),
    True: dict(loss_batches=(64,), dim=16, train_batches=(8,), regions=4,
               img_dim=16, vocab_size=50, max_len=8, text_emb_dim=8,
               model=dict(word_dim=8, embed_size=16, sim_dim=8), eval_sample=4,
               eval_block=4, dual_variant="tiny", dual_batches=(8,), dual_dtype=""),
}


class Table:
  """Rows of the one Markdown table, printed as they come."""

  HEADER = ("| part | what | B | ms (median) | device memory MiB | throughput | note |\n"
            "|---|---|---:|---:|---:|---:|---|")

  def __init__(self, budget_s: float):
    self.lines = [self.HEADER]
    self.start = time.perf_counter()
    self.budget_s = budget_s
    print(self.HEADER, flush=True)

  def over_budget(self) -> bool:
    return time.perf_counter() - self.start > self.budget_s

  def add(self, part, what, b, ms=None, mib=None, throughput="", note=""):
    ms = "" if ms is None else f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"
    mib = "" if mib is None else f"{mib:.0f}" if mib >= 10 else f"{mib:.2f}"
    line = f"| {part} | {what} | {b} | {ms} | {mib} | {throughput} | {note} |"
    self.lines.append(line)
    print(line, flush=True)


def loss_row(b: int, method: str, dim: int, repeats: int):
  """(seconds, device MiB) of listwise_itr_loss fwd+bwd at batch `b`."""
  rng = np.random.default_rng(0)

  def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

  v = unit(rng.normal(size=(b, dim)))
  t = unit(v + 0.8 * unit(rng.normal(size=(b, dim))))
  relevance = rng.random((b, b), dtype=np.float32)
  step = jax.jit(jax.value_and_grad(
      lambda v, t, r: losses.listwise_itr_loss(
          v @ t.T, r, losses.LossOptions(rank_method=method))[0],
      argnums=(0, 1)))
  args = tuple(jax.device_put(x) for x in (v, t, relevance))
  compiled = step.lower(*args).compile()
  return (timing.median_seconds(lambda: compiled(*args), repeats),
          sharding.memory_stats(compiled)["peak"] / 2**20)


def ranks_row(b: int, scan: str, repeats: int):
  """(seconds, device MiB) of sorted_smooth_ranks fwd+bwd on [b, b]."""
  rng = np.random.default_rng(0)
  u = jax.device_put(rng.uniform(-100, 100, (b, b)).astype(np.float32))  # tau 0.01
  w = jax.device_put(rng.uniform(1, 2, (b, b)).astype(np.float32))
  block = sorted_ranks.DEFAULT_ROW_BLOCK if scan == "sequential" else 32
  step = jax.jit(jax.value_and_grad(lambda u, w: jnp.sum(
      w * jnp.log(sorted_ranks.sorted_smooth_ranks(u, block, scan)))))
  compiled = step.lower(u, w).compile()
  return (timing.median_seconds(lambda: compiled(u, w), repeats),
          sharding.memory_stats(compiled)["peak"] / 2**20)


def backbone_args(size: dict, steps: int):
  """The argument namespace benchmarks/backbones.py's helpers read."""
  return types.SimpleNamespace(
      regions=size["regions"], img_dim=size["img_dim"], vocab_size=size["vocab_size"],
      max_len=size["max_len"], text_emb_dim=size["text_emb_dim"], score_chunk=16,
      steps=steps, eval_images=size["eval_sample"], eval_sample=size["eval_sample"],
      eval_block=size["eval_block"])


def model_config(name: str, size: dict, args):
  config = backbones.model_config(name, args)
  config.model.update(size["model"])
  return config


def train_row(name: str, b: int, size: dict, args, config=None, batch=None):
  """(ms per step, device MiB) of one train step of backbone `name`."""
  config = config or model_config(name, size, args)
  model = models.create_model(config.model)
  mesh = sharding.create_mesh((("data", -1),))
  step = train_step_lib.make_train_step(model, losses.LossOptions.from_config(config.loss),
                                        mesh=mesh)
  state = backbones.init_state(model, config, args)
  batch = batch if batch is not None else random_batch(np.random.default_rng(0), b, args)
  batch = sharding.global_batch(batch, mesh)
  compiled = step.lower(state, batch).compile()
  mib = sharding.memory_stats(compiled)["peak"] / 2**20
  return 1e3 * timing.median_step_seconds(compiled, state, batch, args.steps), mib


def eval_row(name: str, size: dict, args):
  """(seconds, pairs) of scoring sample images x 5 captions with SGR / SAF."""
  config = model_config(name, size, args)
  model = models.create_model(config.model)
  n = size["eval_sample"]
  batch = random_batch(np.random.default_rng(0), 5 * n, args)
  variables = backbones.init_state(model, config, args).variables()
  image_repr = jax.jit(lambda v, x: model.apply(v, x, method="encode_images"))(
      variables, batch["images"][:n])
  caption_repr = jax.jit(lambda v, t, l: model.apply(v, t, l, method="encode_texts"))(
      variables, batch["tokens"], batch["lengths"])
  block = dict(image_block=size["eval_block"], caption_block=size["eval_block"],
               progress=False)
  seconds = timing.median_seconds(lambda: similarity.similarity_matrix(
      model, variables, image_repr, caption_repr, **block), args.steps)
  return seconds, n * 5 * n


def dual_encoder_row(name: str, b: int, size: dict, args):
  """(ms per step, device MiB) of a CLIP / SigLIP train step (its own pairwise
  loss + S-NDCG) on random pixels of the variant's resolution."""
  config = defaults.base_config()
  config.model.name, config.model.variant = name, size["dual_variant"]
  config.model.vocab_size = args.vocab_size  # read by the "tiny" variant only
  config.model.dtype = size["dual_dtype"]
  config.loss.pairwise = "infonce" if name == "clip" else "sigmoid"
  model = models.create_model(config.model)
  side, context = model.arch.image_size, model.arch.context_length
  rng = np.random.default_rng(0)
  batch = random_batch(rng, b, types.SimpleNamespace(**{**vars(args), "max_len": context}))
  batch["images"] = rng.standard_normal((b, side, side, 3), np.float32)
  return train_row(name, b, size, args, config=config, batch=batch)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true",
                      help="tiny sizes for a CPU smoke run (CI); figures mean nothing")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--budget_s", type=float, default=420,
                      help="skip the remaining rows once this many seconds have passed")
  parser.add_argument("--max_row_s", type=float, default=60,
                      help="skip chunked-kernel rows predicted to take longer")
  parser.add_argument("--parts", default="loss,ranks,train,eval,dual",
                      help="comma-separated among loss, ranks, train, eval, dual")
  parser.add_argument("--out", default="", help="also write the table to this file")
  args = parser.parse_args(argv)
  size = SIZES[args.tiny]
  parts = set(args.parts.split(","))
  bargs = backbone_args(size, args.repeats)
  device = jax.devices()[0]
  title = (f"itr_jax accelerator benchmark{' (--tiny)' if args.tiny else ''}: "
           f"{jax.device_count()} x {device.device_kind} ({jax.default_backend()}), "
           f"jax {jax.__version__}, Python {platform.python_version()}, "
           f"load average {os.getloadavg()[0]:.1f}")
  print(title + "\n", flush=True)
  table = Table(args.budget_s)

  def skip_if_over_budget(part, what, b) -> bool:
    if table.over_budget():
      table.add(part, what, b, note=f"skipped: past --budget_s={args.budget_s:g}")
      return True
    return False

  if "loss" in parts:
    for method in ("chunked", "sorted"):
      previous = None  # seconds per call at the previous B (chunked: O(B^3))
      for b in size["loss_batches"]:
        what = f"S-NDCG loss fwd+bwd, {method}"
        if skip_if_over_budget("loss", what, b):
          continue
        if method == "chunked" and previous is not None and (
            previous * 8 * (args.repeats + 1) > args.max_row_s):
          previous *= 8
          table.add("loss", what, b, note=f"skipped: ~{previous:.0f} s/call predicted "
                    f"(O(B^3)), over --max_row_s={args.max_row_s:g}")
          continue
        previous, mib = loss_row(b, method, size["dim"], args.repeats)
        table.add("loss", what, b, 1e3 * previous, mib)
  if "ranks" in parts:
    for scan in ("sequential", "associative"):
      for b in size["loss_batches"][:4] if not args.tiny else size["loss_batches"]:
        what = f"sorted ranks fwd+bwd, {scan} scan"
        if not skip_if_over_budget("ranks", what, b):
          seconds, mib = ranks_row(b, scan, args.repeats)
          table.add("ranks", what, b, 1e3 * seconds, mib)
  if "train" in parts:
    for b in size["train_batches"]:
      for name in TWO_TOWER_AND_SGRAF:
        if not skip_if_over_budget("train", name, b):
          ms, mib = train_row(name, b, size, bargs)
          table.add("train", name, b, ms, mib, f"{b / ms * 1e3:,.0f} pairs/s")
  if "eval" in parts:
    for name in ("sgr", "saf"):
      n = size["eval_sample"]
      if not skip_if_over_budget("eval", f"{name} scoring {n} x {5 * n}", ""):
        seconds, pairs = eval_row(name, size, bargs)
        table.add("eval", f"{name} scoring {n} x {5 * n}", "", 1e3 * seconds, None,
                  f"{pairs / seconds:,.0f} pairs/s")
  if "dual" in parts:
    for name in DUAL_ENCODERS:
      if name not in registry.MODELS:
        table.add("train", name, "", note="not in itr_jax.models in this version")
        continue
      for b in size["dual_batches"]:
        if skip_if_over_budget("train", name, b):
          continue
        try:
          ms, mib = dual_encoder_row(name, b, size, bargs)
        except Exception as e:  # pylint: disable=broad-except
          table.add("train", f"{name} {size['dual_variant']}", b,
                    note=f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
          continue
        table.add("train", f"{name} {size['dual_variant']}", b, ms, mib,
                  f"{b / ms * 1e3:,.0f} pairs/s")
  elapsed = time.perf_counter() - table.start
  footer = (f"\n{elapsed:.0f} s in total; load average at end {os.getloadavg()[0]:.1f}. "
            "Memory: XLA's compiled footprint per device (arguments + outputs - "
            "donated + temporaries).")
  print(footer)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      f.write(title + "\n\n" + "\n".join(table.lines) + "\n" + footer + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
