r"""float32 vs bfloat16 computation (`--config.model.dtype`) on the demo config.

Trains configs/synthetic_scenes.py (shortened to --epochs, TF-IDF caption
embeddings so no MiniLM run is needed) once per dtype in fresh workdirs on
one dataset, then prints a table: median train steps/s after the first log
interval (compilation excluded), wall time, and dev / test RSUM of the best
checkpoint.

  python benchmarks/mixed_precision.py --epochs=2 [--dtypes=,bfloat16]
"""
import argparse
import importlib.util
import json
import os
import tempfile
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def demo_config():
  spec = importlib.util.spec_from_file_location(
      "demo_config", os.path.join(ROOT, "configs", "synthetic_scenes.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--dtypes", default=",bfloat16", help="'' = float32")
  parser.add_argument("--root", default=None, help="default: a temporary folder")
  args = parser.parse_args()
  from itr_jax import evaluate as evaluate_cli  # pylint: disable=import-outside-toplevel
  from itr_jax.training import reporting  # pylint: disable=import-outside-toplevel
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  root = args.root or tempfile.mkdtemp(prefix="mixed_precision_")
  rows = []
  for dtype in args.dtypes.split(","):
    config = demo_config()
    config.data.data_dir = os.path.join(root, "data")
    config.data.synthetic.caption_encoder = "tfidf"
    config.train.num_epochs = args.epochs
    config.model.dtype = dtype
    workdir = os.path.join(root, dtype or "float32")
    start = time.time()
    best = trainer.train_and_evaluate(config, workdir)
    wall = time.time() - start
    train = [r for r in reporting.read_metrics(workdir) if r["kind"] == "train"]
    steps_per_s = float(np.median([r["steps_per_second"] for r in train[1:]]))
    test = evaluate_cli.evaluate_run(workdir)["full"]
    rows.append((dtype or "float32", steps_per_s, wall, best["rsum"], test["rsum"],
                 test["true_ndcg_i2t"], test["true_ndcg_t2i"]))
  print(f"\n{args.epochs} epochs of configs/synthetic_scenes.py (TF-IDF RSC), {root}")
  print("| model.dtype | train steps/s (median) | wall s | best dev RSUM | test RSUM "
        "| test true NDCG i2t / t2i |")
  print("|---|---:|---:|---:|---:|---|")
  for name, sps, wall, dev, test, n1, n2 in rows:
    print(f"| {name} | {sps:.2f} | {wall:.0f} | {dev:.1f} | {test:.1f} | {n1:.3f} / {n2:.3f} |")
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
