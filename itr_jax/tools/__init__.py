"""Command-line tools (run as `python -m itr_jax.tools.NAME`)."""
