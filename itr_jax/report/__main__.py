r"""Report of a sweep: Markdown + CSV tables (mean ± std over seeds) and PNG plots.

  python -m itr_jax.report workdirs/sweeps/loss_terms [--out_dir=DIR] [--nocurves]
  python -m itr_jax.report --workdir=workdirs/sweeps/loss_terms

The folder is a sweep's --sweep_dir, or any folder of runs' workdirs.

Writes into <sweep_dir>/report/ (see itr_jax.report.build). For a page of
retrieval examples of one trained run, see `python -m itr_jax.report.examples`.
"""
import importlib.util

from absl import app
from absl import flags

from itr_jax import filesystem as fs
from itr_jax import cli

build = cli.lazy_import("itr_jax.report.build")  # on first use: --help stays fast

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write (default <sweep_dir>/report).")
_CURVES = flags.DEFINE_bool("curves", True, "Draw training curves for every run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep directory (or any folder of "
                               "runs); the same as the positional argument.")


def main(argv):
  folders = argv[1:] + ([_WORKDIR.value] if _WORKDIR.value else [])
  if len(folders) != 1:
    raise app.UsageError("Pass one folder of runs: itr-report SWEEP_DIR (or "
                         "--workdir=SWEEP_DIR) [--out_dir=DIR].")
  if importlib.util.find_spec("matplotlib") is None:
    raise ValueError("itr-report draws its plots with matplotlib, which is not "
                     "installed: pip install 'itr_jax[report]'.")
  paths = build.write_report(folders[0], _OUT_DIR.value, curves=_CURVES.value)
  with fs.open(paths["markdown"]) as f:
    print(f.read())
  print("\n".join(f"{k}: {v}" for k, v in sorted(paths.items()) if k != "markdown"))
  print(f"markdown: {paths['markdown']}")


def run():
  """Console-script entry point."""
  cli.run(main, positional=True)


if __name__ == "__main__":
  run()
