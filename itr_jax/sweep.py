r"""Run every member of a sweep declared in a config file.

  python -m itr_jax.sweep --config=configs/ablations/loss_terms.py \
      --sweep_dir=sweeps/loss_terms [--parallel=2] [--set=train.num_epochs=2 ...] \
      [--host_index=0 --num_hosts=1] [--dry_run] [--noevaluate] [--report] \
      [--population]

Each member trains in `<sweep_dir>/<field=value,...>` and is then evaluated on
the test split. Members with a DONE marker are skipped; interrupted ones are
resumed from their latest checkpoint, so running the same command again
finishes a sweep. `--config.<field>=<value>` (or `--set=<field>=<value>`)
overrides apply to every member (not part of their names). With several hosts, start the same command on each with its
`--host_index`; host i runs members i, i + num_hosts, ...
With --population the members train together in one process (one vmapped
program; see itr_jax.sweeps.population for what may vary and what differs).
"""
import signal
import sys
import time

from absl import flags
from ml_collections import config_flags

from itr_jax import filesystem as fs
from itr_jax import cli
from itr_jax import sweeps
from itr_jax.training import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Sweep config file (defines get_config and get_sweep/get_hyper); "
    "--config.<field>=<value> overrides apply to every member, like --set.",
    lock_config=True)
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Directory for the members' workdirs.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Members run at once on this machine.")
_SET = flags.DEFINE_multi_string(
    "set", [], "field=value applied to every member, e.g. --set=train.num_epochs=2.")
_HOST_INDEX = flags.DEFINE_integer("host_index", 0, "This host's index (multi-host sweeps).")
_NUM_HOSTS = flags.DEFINE_integer("num_hosts", 1, "Hosts sharing the sweep.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the members and commands; run nothing.")
_EVALUATE = flags.DEFINE_bool("evaluate", True, "Evaluate each member on its test split.")
_POPULATION = flags.DEFINE_bool(
    "population", False, "Train this host's unfinished members together in one "
    "process (itr_jax.sweeps.population: vmap over the members; they may vary "
    "only seed, loss.weight, loss.tau, loss.margin; no checkpoints).")
_REPORT = flags.DEFINE_bool("report", False, "Write the report (itr_jax.report) at the end.")
flags.mark_flags_as_required(["config", "sweep_dir"])


def main(argv):
  config_flag = flags.FLAGS["config"]
  decl = sweeps.load(config_flags.get_config_filename(config_flag))
  common = {**config_flags.get_override_values(config_flag),
            **sweeps.parse_assignments(_SET.value)}
  for overrides in decl.members:
    sweeps.apply_overrides(decl.base, {**common, **overrides})
  sweeps.members.check_manifest(_SWEEP_DIR.value, decl.config_flag, common)
  members = sweeps.expand(_SWEEP_DIR.value, decl.members)
  mine = sweeps.for_host(members, _HOST_INDEX.value, _NUM_HOSTS.value)
  todo = [m for m in mine if not m.done]
  print(f"Sweep {decl.config_flag}: {len(members)} members, {len(mine)} on this "
        f"host, {len(mine) - len(todo)} already done.", flush=True)
  if _POPULATION.value:
    from itr_jax.sweeps import population
    population.check_population([m.overrides for m in todo])
  if _DRY_RUN.value:
    for m in mine:
      state = "done" if m.done else "todo"
      reason = workdir_lib.no_checkpoints_reason(m.workdir)
      print(f"[{state}] {m.name}" + (f" (no checkpoints: {reason})" if reason else "")
            + "\n  " + " ".join(sweeps.members.train_command(decl.config_flag, m, common)))
    return
  sweeps.write_manifest(_SWEEP_DIR.value, decl.config_flag, common, members)
  t0 = time.time()

  finished = [0]

  def show(outcome):
    finished[0] += 1
    extra = f" ({outcome.seconds:.0f}s)" if outcome.seconds else ""
    msg = f": {outcome.message}" if outcome.message else ""
    print(f"[{outcome.status} {finished[0]}/{len(mine)}] {outcome.member.name}{extra}{msg}",
          flush=True)

  def show_start(member):
    print(f"[start] {member.name}; log: "
          f"{fs.join(member.workdir, sweeps.runner.LOG_FILE)}", flush=True)

  if _POPULATION.value:
    if todo:
      population.train_population(sweeps.apply_overrides(decl.base, common), todo,
                                  evaluate_test=_EVALUATE.value)
    outcomes = [sweeps.Outcome(m, "done" if m in todo else "skipped",
                               message="no checkpoints: a population sweep keeps none"
                               if m in todo else "")
                for m in mine]
    for o in outcomes:
      show(o)
  else:
    # Either becomes a SIGTERM to the running trainers: they checkpoint and exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
      signal.signal(sig, lambda *_: sweeps.stop_all(signal.SIGTERM))
    outcomes = sweeps.run_members(mine, decl.config_flag, common,
                                  parallel=_PARALLEL.value,
                                  evaluate=_EVALUATE.value, on_outcome=show,
                                  on_start=show_start)
  failed = [o for o in outcomes if o.status in ("failed", "stopped")]
  print(f"Finished in {time.time() - t0:.0f}s: {len(outcomes) - len(failed)} ok, "
        f"{len(failed)} failed or stopped.", flush=True)
  if _REPORT.value and _HOST_INDEX.value == 0:
    from itr_jax.report import build as report_build
    paths = report_build.write_report(_SWEEP_DIR.value)
    print(f"Report: {paths['markdown']}")
  if failed:
    sys.exit(1)


def run():
  """Console-script entry point."""
  cli.run(main, config_fields=True)


if __name__ == "__main__":
  run()
