r"""Report of a sweep: Markdown + CSV tables (mean ± std over seeds) and PNG plots.

  python -m itr_jax.report workdirs/sweeps/loss_terms [--out_dir=DIR] [--nocurves]

Writes into <sweep_dir>/report/ (see itr_jax.report.build). For a page of
retrieval examples of one trained run, see `python -m itr_jax.report.examples`.
"""
from absl import app
from absl import flags

from itr_jax import filesystem as fs
from itr_jax import cli

build = cli.lazy_import("itr_jax.report.build")  # on first use: --help stays fast

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write (default <sweep_dir>/report).")
_CURVES = flags.DEFINE_bool("curves", True, "Draw training curves for every run.")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError("Usage: python -m itr_jax.report <sweep_dir> [--out_dir=DIR]")
  paths = build.write_report(argv[1], _OUT_DIR.value, curves=_CURVES.value)
  with fs.open(paths["markdown"]) as f:
    print(f.read())
  print("\n".join(f"{k}: {v}" for k, v in sorted(paths.items()) if k != "markdown"))
  print(f"markdown: {paths['markdown']}")


def run():
  """Console-script entry point."""
  cli.run(main)


if __name__ == "__main__":
  run()
