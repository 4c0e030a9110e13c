"""Time and memory of listwise_itr_loss (forward + backward) vs batch size.

Compares the smooth-rank kernels of S-NDCG side by side: "sorted" (sort +
exponential-sum recurrences, O(B^2 log B) time, O(B^2) memory), "chunked"
(custom VJP, O(B^3) time, O(B^2) memory) and "dense", the reference that
materialises [B, B, B] tensors like the official PyTorch code. Each
configuration runs in its own subprocess, so the peak RSS column is that
configuration's alone.

  python benchmarks/loss_memory_time.py                      # B = 128 ... 4096
  python benchmarks/loss_memory_time.py --batch_sizes=512,1024,2048,4096,8192,16384 \
      --modes=chunked,sorted --max_chunked_batch=4096

Columns: median wall time of jit(value_and_grad) w.r.t. the image and caption
embeddings (after compilation), the process CPU time of that call (all
threads; robust to other jobs on a shared machine), XLA's temporary buffer size from
`compiled.memory_analysis()`, and the subprocess's peak resident set size.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# Configurations whose compiled program needs more temporary memory than this
# are compiled (to report the size) but not run.
MEMORY_LIMIT_GIB = 12.0


def run_one(b: int, mode: str, chunk_size, repeats: int, dim: int,
            memory_limit_gib: float) -> dict:
  """Compiles and times one configuration in this process."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from itr_jax import losses

  rng = np.random.default_rng(0)

  def unit(x):
    return jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), jnp.float32)

  v = unit(rng.normal(size=(b, dim)))
  t = unit(np.asarray(v) + 0.8 * np.asarray(unit(rng.normal(size=(b, dim)))))
  # Drawn in float32 and moved, not copied, so that the peak RSS is the
  # loss's, not a float64 [B, B] draw's (512 MiB at B = 8192).
  rel = rng.random(size=(b, b), dtype=np.float32)
  rel = jax.device_put(rel)

  def kernel(scores, relevance):
    return losses.listwise_itr_loss(scores, relevance, losses.LossOptions(chunk_size=chunk_size, rank_method=mode))[0]

  def dense(scores, relevance, weight=0.5):
    # Same loss, with the O(B^3) reference in place of the chunked S-NDCG.
    i2t = losses.dense_smooth_ndcg_rows(scores, relevance)
    t2i = losses.dense_smooth_ndcg_rows(scores.T, relevance)
    listwise = ((1 - i2t.mean()) + (1 - t2i.mean())) / 2
    return (1 - weight) * losses.triplet_loss(scores) + weight * listwise

  loss = dense if mode == "dense" else kernel
  # Relevance is an argument, not a closed-over constant: XLA would otherwise
  # constant-fold the IDCG sorts at compile time.
  step = jax.jit(jax.value_and_grad(lambda v, t, r: loss(v @ t.T, r), argnums=(0, 1)))
  start = time.perf_counter()
  compiled = step.lower(v, t, rel).compile()
  compile_s = time.perf_counter() - start
  temp = compiled.memory_analysis().temp_size_in_bytes
  if temp > memory_limit_gib * 2 ** 30:
    return dict(b=b, mode=mode, skipped=True, temp_bytes=temp)

  start, cpu = time.perf_counter(), time.process_time()
  jax.block_until_ready(compiled(v, t, rel))  # warm-up
  warmup_s, warmup_cpu = time.perf_counter() - start, time.process_time() - cpu
  # The program is compiled ahead of time, so a warm-up slower than 20 s is
  # itself the (single) timing of a very slow configuration.
  runs = repeats if warmup_s < 20 else 1
  times, cpus = ([], []) if warmup_s < 20 else ([warmup_s], [warmup_cpu])
  for _ in range(runs - len(times)):
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(v, t, rel))
    times.append(time.perf_counter() - start)
    cpus.append(time.process_time() - cpu)
  return dict(b=b, mode=mode, skipped=False, compile_s=compile_s, time_s=statistics.median(times),
              cpu_s=statistics.median(cpus),
              runs=runs, temp_bytes=temp,
              peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_sizes", default="128,256,512,1024,2048,4096")
  parser.add_argument("--modes", default="chunked,sorted,dense",
                      help="comma-separated among chunked, sorted, dense")
  parser.add_argument("--max_chunked_batch", type=int, default=4096,
                      help="skip the O(B^3)-time chunked kernel above this B "
                      "(B = 8192 takes ~15 min fwd+bwd on 2 CPU cores)")
  parser.add_argument("--chunk_size", type=int, default=None,
                      help="S-NDCG candidates per chunk (default: the library's).")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--memory_limit_gib", type=float, default=MEMORY_LIMIT_GIB,
                      help="compile but do not run configurations whose XLA "
                      "temporary memory exceeds this")
  parser.add_argument("--dim", type=int, default=1024, help="embedding size")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker:  # "B,mode": one configuration, result as JSON on stdout.
    b, mode = args.worker.split(",")
    print(json.dumps(run_one(int(b), mode, args.chunk_size, args.repeats, args.dim,
                             args.memory_limit_gib)))
    return

  import jax

  from itr_jax import losses
  chunk = args.chunk_size or losses.DEFAULT_CHUNK_SIZE
  print(f"listwise_itr_loss forward+backward w.r.t. [B, {args.dim}] embeddings; "
        f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({os.cpu_count()} CPUs); chunk_size={chunk}; median of up to "
        f"{args.repeats} runs after compile; load average at start "
        f"{os.getloadavg()[0]:.1f} (other processes slow the timings).\n")
  header = (f"| {'B':>5} | {'S-NDCG':<8} | {'time (s)':>9} | {'CPU (s)':>8} | {'runs':>4} | "
            f"{'XLA temp (MiB)':>14} | {'peak RSS (MiB)':>14} | {'compile (s)':>11} | "
            f"{'chunked / this (wall / CPU)':>27} |")
  print(header)
  print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
  for b in (int(x) for x in args.batch_sizes.split(",")):
    chunked_s = chunked_cpu = None
    for mode in args.modes.split(","):
      if mode == "chunked" and b > args.max_chunked_batch:
        print(f"| {b:>5} | {mode:<8} | skipped (O(B^3) time; "
              f"--max_chunked_batch={args.max_chunked_batch}) |")
        continue
      cmd = [sys.executable, os.path.abspath(__file__), f"--worker={b},{mode}",
             f"--repeats={args.repeats}", f"--dim={args.dim}",
             f"--memory_limit_gib={args.memory_limit_gib}"]
      if args.chunk_size:
        cmd.append(f"--chunk_size={args.chunk_size}")
      proc = subprocess.run(cmd, capture_output=True, text=True)
      if proc.returncode != 0:
        print(f"| {b:>5} | {mode:<8} | failed (exit {proc.returncode}): "
              f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''} |")
        continue
      r = json.loads(proc.stdout.strip().splitlines()[-1])
      if r["skipped"]:
        print(f"| {b:>5} | {mode:<8} | not run (XLA temp "
              f"{r['temp_bytes'] / 2 ** 30:.1f} GiB > --memory_limit_gib="
              f"{args.memory_limit_gib:g}) |")
        continue
      if mode == "chunked":
        chunked_s, chunked_cpu = r["time_s"], r["cpu_s"]
      ratio = (f"{chunked_s / r['time_s']:.1f}x / {chunked_cpu / r['cpu_s']:.1f}x"
               if chunked_s and mode != "chunked" else "-")
      print(f"| {b:>5} | {mode:<8} | {r['time_s']:>9.3f} | {r['cpu_s']:>8.2f} | {r['runs']:>4} | "
            f"{r['temp_bytes'] / 2 ** 20:>14.1f} | {r['peak_rss_bytes'] / 2 ** 20:>14.0f} | "
            f"{r['compile_s']:>11.1f} | {ratio:>27} |", flush=True)
  print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
