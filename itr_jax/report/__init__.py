"""Reports of trained runs: sweep tables and plots, retrieval-example pages.

* `build.write_report(sweep_dir)` (CLI `python -m itr_jax.report <sweep_dir>`)
* `examples.write_examples_page(workdir)` (CLI `python -m itr_jax.report.examples`)
"""
