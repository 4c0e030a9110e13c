r"""Train an ITR model from a config file.

  python -m itr_jax.train --config=configs/synthetic_scenes.py --workdir=workdirs/demo \
      [--config.loss.tau=0.02 ...] [--fresh] [--dry_run] [--verbose]

--config is a config file or the name of a shipped config (`f30k_vse:sndcg`,
`synthetic_scenes`). Any config field can be overridden with
--config.<path>=<value>; `--config=X --help` lists X's fields and values;
--dry_run prints the resolved config and exits. Running again
with the same --workdir resumes from its latest checkpoint; a second trainer
on the same --workdir is refused while the first runs. Errors print what is
wrong and what to do (the traceback with --verbose). SIGTERM or Ctrl-C:
checkpoint and exit; a second Ctrl-C exits at once.

Multi-host: start the same command on every host (or process) with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (or the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment);
on Cloud TPU pod slices and SLURM, --distributed=on lets JAX find them. See
launch/ and itr_jax.sharding.multihost.
"""
from absl import flags
from ml_collections import config_flags

from itr_jax import cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a file (configs/*.py[:variant]) or a "
    "shipped config's name (f30k_vse:sndcg).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and the resolved config.")
_FRESH = flags.DEFINE_bool(
    "fresh", False, "Start over even if --workdir holds a run with another "
    "config; that run is moved to <workdir>/previous_runs/, not deleted.")
_DISTRIBUTED = flags.DEFINE_enum(
    # itr_jax.sharding.multihost.MODES (not imported here: it imports JAX).
    "distributed", "auto", ["auto", "on", "off"],
    "Multi-process start-up: auto (when a coordinator or a multi-process "
    "SLURM/MPI/TPU job is seen), on (always; JAX auto-detects TPU pods and "
    "SLURM), off (single process).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "HOST:PORT of process 0's coordinator.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print the resolved config (with every override) as JSON "
    "and exit; nothing is trained or written.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  config = _CONFIG.value
  config.keys()  # an unloadable file raises its error here, before JAX is imported
  if _DRY_RUN.value:
    print(config.to_json_best_effort(indent=2, sort_keys=True))
    return
  import jax  # pylint: disable=import-outside-toplevel
  from itr_jax.sharding import multihost  # pylint: disable=import-outside-toplevel
  from itr_jax.training import trainer  # pylint: disable=import-outside-toplevel
  multihost.initialize(_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
                       num_processes=_NUM_PROCESSES.value,
                       process_id=_PROCESS_ID.value)
  best = trainer.train_and_evaluate(config, _WORKDIR.value, fresh=_FRESH.value)
  if jax.process_index() == 0:
    print(f"Best dev checkpoint: step {best.get('best_step')}, "
          f"RSUM {best.get('rsum', float('nan')):.2f}")


def run():
  """Console-script entry point."""
  cli.run(main, config_fields=True)


if __name__ == "__main__":
  run()
