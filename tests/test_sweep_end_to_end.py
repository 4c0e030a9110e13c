"""A real two-member sweep through the CLIs: train, evaluate, report, skip, resume.

Members are the tiny demo config (tests/tiny_config.py) for one epoch, run
as subprocesses two at a time, exactly as `python -m itr_jax.sweep` runs them.
Slow (six JAX subprocesses, minutes on a busy 2-core machine); the runner's
logic is covered quickly by tests/test_sweep.py with a fake python.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from itr_jax import sweeps
from itr_jax.training import reporting
from tiny_config import OVERRIDES

pytestmark = pytest.mark.slow

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _sweep(config, sweep_dir, data_dir, *extra):
  sets = [f"--set={k}={v}" for k, v in OVERRIDES.items()]
  cmd = [sys.executable, "-m", "itr_jax.sweep", f"--config={config}",
         f"--sweep_dir={sweep_dir}", f"--set=data.data_dir={data_dir}",
         "--set=train.num_epochs=1", *sets, *extra]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": ""}
  return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env,
                        check=False)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep_e2e")
  config = root / "tiny_sweep.py"
  config.write_text(textwrap.dedent(f"""
      from itr_jax.sweeps import declaration
      def get_config(arg=None):
        return declaration.load_config_file({os.path.join(REPO, "configs", "synthetic_scenes.py")!r})
      def get_hyper(h):
        return h.sweep("loss.weight", [0.0, 1.0])
      """))
  sweep_dir, data_dir = str(root / "sweep"), str(root / "data")
  first = _sweep(str(config), sweep_dir, data_dir, "--parallel=2", "--report")
  return str(config), sweep_dir, data_dir, first


def test_sweep_trains_evaluates_and_reports(swept):
  _, sweep_dir, _, first = swept
  assert first.returncode == 0, first.stdout + first.stderr
  assert "2 ok, 0 failed" in first.stdout
  for name, weight in (("loss.weight=0.0", 0.0), ("loss.weight=1.0", 1.0)):
    workdir = os.path.join(sweep_dir, name)
    assert os.path.exists(os.path.join(workdir, sweeps.DONE_FILE))
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
    assert config["loss"]["weight"] == weight and config["train"]["num_epochs"] == 1
    with open(os.path.join(workdir, "eval_test.json")) as f:
      assert "true_ndcg_i2t" in json.load(f)["full"]
  with open(os.path.join(sweep_dir, "report", "report.md")) as f:
    md = f.read()
  assert "## Test split" in md and "| 0.0 | 1 |" in md and "| 1.0 | 1 |" in md


def test_rerun_skips_done_and_finishes_interrupted(swept):
  config, sweep_dir, data_dir, first = swept
  assert first.returncode == 0
  # Member 1 "interrupted" after training: no DONE, no evaluation yet.
  workdir = os.path.join(sweep_dir, "loss.weight=1.0")
  os.remove(os.path.join(workdir, sweeps.DONE_FILE))
  os.remove(os.path.join(workdir, "eval_test.json"))
  before = len(reporting.read_metrics(workdir))
  again = _sweep(config, sweep_dir, data_dir)
  assert again.returncode == 0, again.stdout + again.stderr
  assert "1 already done" in again.stdout
  assert "[skipped] loss.weight=0.0" in again.stdout and "[done] loss.weight=1.0" in again.stdout
  assert len(reporting.read_metrics(workdir)) == before  # resumed at the end: no retraining
  assert os.path.exists(os.path.join(workdir, "eval_test.json"))



def test_sigterm_stops_the_sweep_and_a_rerun_resumes(swept, tmp_path):
  config, _, data_dir, _ = swept
  sweep_dir = str(tmp_path / "stopped")
  sets = [f"--set={k}={v}" for k, v in OVERRIDES.items()]
  cmd = [sys.executable, "-m", "itr_jax.sweep", f"--config={config}",
         f"--sweep_dir={sweep_dir}", f"--set=data.data_dir={data_dir}",
         "--set=train.num_epochs=30", *sets]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": ""}
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env)
  workdir = os.path.join(sweep_dir, "loss.weight=0.0")
  deadline = time.time() + 300
  while not any(r["kind"] == "train" for r in reporting.read_metrics(workdir)):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
    time.sleep(1)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 1, out
  assert "[stopped] loss.weight=0.0" in out and "[stopped] loss.weight=1.0" in out
  assert not os.path.exists(os.path.join(workdir, sweeps.DONE_FILE))
  stopped_at = max(r["step"] for r in reporting.read_metrics(workdir))
  assert stopped_at < 300  # stopped early, not run to the end
  with open(os.path.join(workdir, "sweep.log")) as f:
    assert "Preempted: saved a checkpoint" in f.read()
