"""benchmarks/accelerator.py runs end to end (at --tiny sizes, on CPU) and
writes its one Markdown table with a measured row for every part.

The default run times the loss and rank kernels only; the run with every
part (each backbone's train step and SGRAF's evaluation) is slow
(`bash launch/test.sh -m slow`): those steps are covered fast by
test_sharding.py (VSE++), test_vse_infty_training.py (VSE-infinity),
test_sgraf.py (SGR / SAF steps and blocked evaluation) and
test_dual_encoder_training.py (CLIP / SigLIP).
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_benchmark(tmp_path, parts):
  out = tmp_path / "table.md"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py"), "--tiny",
       "--repeats=1", "--budget_s=100000", f"--parts={parts}", f"--out={out}"],
      env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = out.read_text().splitlines()
  assert lines[0].startswith("itr_jax accelerator benchmark (--tiny): 1 x ")
  rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines
          if line.startswith("| ") and not line.startswith("| part")]
  assert not [r for r in rows if r[6].startswith(("skipped", "failed"))], rows
  measured = {(r[0], r[1], r[2]) for r in rows if r[3] and float(r[3]) > 0}
  return rows, measured


def test_tiny_run_writes_one_table_with_the_kernel_parts(tmp_path):
  rows, measured = _run_benchmark(tmp_path, "loss,ranks")
  for what in ("S-NDCG loss fwd+bwd, chunked", "S-NDCG loss fwd+bwd, sorted"):
    assert ("loss", what, "64") in measured
  for scan in ("sequential", "associative"):
    assert ("ranks", f"sorted ranks fwd+bwd, {scan} scan", "64") in measured
  assert {r[0] for r in rows} == {"loss", "ranks"}


@pytest.mark.slow
def test_tiny_run_writes_one_table_with_every_part(tmp_path):
  """Slow; test_tiny_run_writes_one_table_with_the_kernel_parts covers the
  script and its table fast (the steps: see the module docstring)."""
  rows, measured = _run_benchmark(tmp_path, "loss,ranks,train,eval,dual")
  for what in ("S-NDCG loss fwd+bwd, chunked", "S-NDCG loss fwd+bwd, sorted"):
    assert ("loss", what, "64") in measured
  for scan in ("sequential", "associative"):
    assert ("ranks", f"sorted ranks fwd+bwd, {scan} scan", "64") in measured
  for name in ("vse", "vse_infty", "sgr", "saf"):
    assert ("train", name, "8") in measured
  assert {r[1] for r in rows if r[0] == "eval" and r[3] and "pairs/s" in r[5]} == {
      "sgr scoring 4 x 20", "saf scoring 4 x 20"}
