"""benchmarks/accelerator.py runs end to end (at --tiny sizes, on CPU) and
writes its one Markdown table with a measured row for every part."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tiny_run_writes_one_table_with_every_part(tmp_path):
  out = tmp_path / "table.md"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device
  env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py"), "--tiny",
       "--repeats=1", "--budget_s=100000", f"--out={out}"],
      env=env, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = out.read_text().splitlines()
  assert lines[0].startswith("itr_jax accelerator benchmark (--tiny): 1 x ")
  rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines
          if line.startswith("| ") and not line.startswith("| part")]
  measured = {(r[0], r[1], r[2]) for r in rows if r[3] and float(r[3]) > 0}
  for what in ("S-NDCG loss fwd+bwd, chunked", "S-NDCG loss fwd+bwd, sorted"):
    assert ("loss", what, "64") in measured
  for scan in ("sequential", "associative"):
    assert ("ranks", f"sorted ranks fwd+bwd, {scan} scan", "64") in measured
  for name in ("vse", "vse_infty", "sgr", "saf"):
    assert ("train", name, "8") in measured
  assert {r[1] for r in rows if r[0] == "eval" and r[3] and "pairs/s" in r[5]} == {
      "sgr scoring 4 x 20", "saf scoring 4 x 20"}
  assert not [r for r in rows if r[6].startswith(("skipped", "failed"))], rows
