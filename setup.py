"""Packaging beyond pyproject.toml: the shipped configs.

`configs/` (the experiment configs, kept at the top of the repository so
`--config=configs/f30k_vse.py` works in a checkout) is installed as the
package `itr_jax.configs`, so an installed itr_jax finds them by name
(`itr-train --config=f30k_vse:sndcg`; see itr_jax.cli.resolve_config).
"""
from setuptools import find_packages
from setuptools import setup

setup(
    packages=find_packages(include=["itr_jax*"]) + ["itr_jax.configs",
                                                     "itr_jax.configs.ablations"],
    package_dir={"itr_jax.configs": "configs"},
)
