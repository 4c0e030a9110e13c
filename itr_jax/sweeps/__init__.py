"""Sweeps: declare a set of runs in a config file, run them, skip finished ones.

  from itr_jax import sweeps
  decl = sweeps.load("configs/ablations/loss_terms.py")
  members = sweeps.expand("sweeps/loss_terms", decl.members)
  sweeps.run_members(members, decl.config_flag, parallel=2)

or, from the shell, `python -m itr_jax.sweep --config=... --sweep_dir=...`.
"""
from itr_jax.sweeps import hyper
from itr_jax.sweeps.declaration import SweepDeclaration
from itr_jax.sweeps.declaration import apply_overrides
from itr_jax.sweeps.declaration import load
from itr_jax.sweeps.declaration import parse_assignments
from itr_jax.sweeps.members import DONE_FILE
from itr_jax.sweeps.members import Member
from itr_jax.sweeps.members import expand
from itr_jax.sweeps.members import for_host
from itr_jax.sweeps.members import member_name
from itr_jax.sweeps.members import read_manifest
from itr_jax.sweeps.members import write_manifest
from itr_jax.sweeps.runner import Outcome
from itr_jax.sweeps.runner import run_member
from itr_jax.sweeps.runner import run_members
from itr_jax.sweeps.runner import stop_all
