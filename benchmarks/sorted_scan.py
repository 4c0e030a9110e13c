"""Sequential vs associative recurrences of the "sorted" smooth-rank kernel.

Times `sorted_ranks.sorted_smooth_ranks` forward + backward on [B, B] scores
with `scan="sequential"` (lax.scan: N - 1 dependent steps of O(rows * M)
work per row block) and `scan="associative"` (lax.associative_scan: O(log N)
depth, [N, rows, M] states per block, so it gets a smaller row block). The
sequential scan is latency-bound on GPU/TPU, where the associative one should
win; on CPU the work, not the depth, decides.

  python benchmarks/sorted_scan.py --batch_sizes=512,1024,2048
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from itr_jax.losses import sorted_ranks


def bench(b: int, scan: str, row_block: int, repeats: int) -> dict:
  rng = np.random.default_rng(0)
  u = jnp.asarray(rng.uniform(-100, 100, (b, b)), jnp.float32)  # tau = 0.01
  w = jnp.asarray(rng.uniform(1, 2, (b, b)), jnp.float32)
  step = jax.jit(jax.value_and_grad(lambda u: jnp.sum(
      w * jnp.log(sorted_ranks.sorted_smooth_ranks(u, row_block, scan)))))
  compiled = step.lower(u).compile()
  jax.block_until_ready(compiled(u))
  walls, cpus = [], []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(u))
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return dict(wall=statistics.median(walls), cpu=statistics.median(cpus),
              temp=compiled.memory_analysis().temp_size_in_bytes)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_sizes", default="512,1024,2048")
  parser.add_argument("--row_block", type=int, default=sorted_ranks.DEFAULT_ROW_BLOCK,
                      help="rows per block, sequential scan")
  parser.add_argument("--associative_row_block", type=int, default=32,
                      help="rows per block, associative scan")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  print(f"sorted_smooth_ranks fwd+bwd on [B, B]; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; median of {args.repeats}; load average "
        f"{os.getloadavg()[0]:.1f}\n")
  print("| B | scan | row block | time (s) | CPU (s) | XLA temp (MiB) |")
  print("|---:|---|---:|---:|---:|---:|")
  for b in (int(x) for x in args.batch_sizes.split(",")):
    for scan, block in (("sequential", args.row_block),
                        ("associative", args.associative_row_block)):
      r = bench(b, scan, block, args.repeats)
      print(f"| {b} | {scan} | {block} | {r['wall']:.3f} | {r['cpu']:.2f} | "
            f"{r['temp'] / 2 ** 20:.0f} |", flush=True)
  print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
