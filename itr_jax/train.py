r"""Train an ITR model from a config file.

  python -m itr_jax.train --config=configs/synthetic_scenes.py --workdir=workdirs/demo \
      [--config.loss.tau=0.02 ...] [--fresh]

Any config field can be overridden with --config.<path>=<value>. Running again
with the same --workdir resumes from its latest checkpoint.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from itr_jax.training import trainer

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py[:variant]).",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs and the resolved config.")
_FRESH = flags.DEFINE_bool(
    "fresh", False, "Start over even if --workdir holds a run with another "
    "config; that run is moved to <workdir>/previous_runs/, not deleted.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  best = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value, fresh=_FRESH.value)
  print(f"Best dev checkpoint: step {best.get('best_step')}, "
        f"RSUM {best.get('rsum', float('nan')):.2f}")


if __name__ == "__main__":
  app.run(main)
