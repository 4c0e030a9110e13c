"""Throughput of the JAX all-MiniLM-L6-v2 on caption-like text (CPU or GPU).

    python benchmarks/embed_captions.py [--num_captions=25000] [--batch_size=128]

Captions are synthetic, 10-15 words (COCO/Flickr-like lengths, ~14-20
WordPiece tokens). "load" is reading weights + tokenizer; "encode" includes
tokenization, bucketing, jit compilation (one per padded shape) and the
forward passes; "encode (warm)" repeats the call with everything compiled.
"""
import argparse
import time

import numpy as np

from itr_jax.text_encoders import SentenceEncoder

_WORDS = (
    "a an the two three man woman child dog cat group people bicycle car bus "
    "street field beach table kitchen park shirt red blue white green black "
    "young old small large is are sitting standing walking riding holding "
    "playing eating looking next to on in with near while at of front behind "
    "ball frisbee pizza umbrella horse train skateboard surfboard wave snow "
    "grass building window plate phone camera bench tree water road").split()


def synthetic_captions(n: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(10, 16, size=n)
  return [" ".join(rng.choice(_WORDS, size=k)) + "." for k in lengths]


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--num_captions", type=int, default=25000)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--warm", action="store_true",
                      help="also time a second, fully compiled pass")
  args = parser.parse_args()
  import jax
  captions = synthetic_captions(args.num_captions)
  rows = []
  t = time.perf_counter()
  encoder = SentenceEncoder.from_pretrained()
  rows.append(("load", 0, time.perf_counter() - t))
  tokens = [len(x) for x in encoder.tokenize(captions)]
  t = time.perf_counter()
  emb = encoder.encode(captions, batch_size=args.batch_size)
  rows.append(("encode", len(captions), time.perf_counter() - t))
  if args.warm:
    t = time.perf_counter()
    encoder.encode(captions, batch_size=args.batch_size)
    rows.append(("encode (warm)", len(captions), time.perf_counter() - t))
  assert emb.shape == (len(captions), encoder.dim)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"batch_size {args.batch_size}, tokens/caption mean "
        f"{np.mean(tokens):.1f} (min {min(tokens)}, max {max(tokens)}), "
        f"compiled shapes {encoder._embed._cache_size()}")
  print(f"| {'step':<14} | {'captions':>8} | {'seconds':>8} | {'captions/s':>10} |")
  print(f"|{'-' * 16}|{'-' * 9}:|{'-' * 9}:|{'-' * 11}:|")
  for name, n, sec in rows:
    rate = f"{n / sec:,.0f}" if n else "-"
    print(f"| {name:<14} | {n:>8} | {sec:>8.2f} | {rate:>10} |")


if __name__ == "__main__":
  main()
