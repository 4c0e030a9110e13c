"""Multi-host (multi-process) start-up: `jax.distributed.initialize` from flags or env.

Every process of a run calls `initialize` before anything touches a JAX
device. Settings, first found wins:

* arguments (the `--coordinator_address`, `--num_processes`, `--process_id`
  flags of `itr_jax.train`);
* environment: JAX_COORDINATOR_ADDRESS (read by JAX itself),
  JAX_NUM_PROCESSES, JAX_PROCESS_ID;
* JAX's cluster auto-detection (Cloud TPU pod slices, SLURM, Open MPI,
  Kubernetes), which fills in whatever is still unset.

`mode="auto"` (default) initialises when a coordinator or a process count is
given, or when it sees a multi-process SLURM / Open MPI job or a multi-worker
TPU slice; `"on"` always initialises (JAX auto-detects the rest, e.g. on a TPU
pod slice where the workers are found through the metadata server);
`"off"` never does (one process).

On CPU, processes talk through the gloo collectives (JAX's default; switched
on here if an environment override turned CPU collectives off).
"""
from __future__ import annotations

import os
from typing import Callable, Optional, TypeVar

import jax
from jax.experimental import multihost_utils

MODES = ("auto", "on", "off")
T = TypeVar("T")


def _env_int(name: str) -> Optional[int]:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"Environment variable {name}={value!r} must be an "
                     "integer.") from None


def cluster_detected(environ=os.environ) -> bool:
  """True in a multi-process job that JAX can auto-configure.

  >>> cluster_detected({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "4"})
  True
  >>> cluster_detected({})
  False
  """
  def count(name):
    try:
      return int(environ.get(name, "1"))
    except ValueError:
      return 1

  if "SLURM_JOB_ID" in environ and count("SLURM_NTASKS") > 1:
    return True
  if count("OMPI_COMM_WORLD_SIZE") > 1:
    return True
  hosts = environ.get("TPU_WORKER_HOSTNAMES") or environ.get("TPU_PROCESS_ADDRESSES")
  return bool(hosts) and "," in hosts


def initialize(mode: str = "auto", *, coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Optional[list[int]] = None,
               initialization_timeout: int = 300) -> bool:
  """Joins this process to a multi-process run; returns whether it did.

  Call once, before any other JAX call. Bad combinations raise ValueError.

  >>> initialize("off")
  False
  """
  if mode not in MODES:
    raise ValueError(f"--distributed must be one of {MODES}, got {mode!r}.")
  coordinator_address = (coordinator_address or
                         os.environ.get("JAX_COORDINATOR_ADDRESS") or None)
  if num_processes is None:
    num_processes = _env_int("JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _env_int("JAX_PROCESS_ID")
  if mode == "off":
    return False
  if mode == "auto" and not (coordinator_address or (num_processes or 1) > 1
                             or cluster_detected()):
    return False
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes must be >= 1, got {num_processes}.")
  if (process_id is not None and num_processes is not None
      and not 0 <= process_id < num_processes):
    raise ValueError(f"--process_id={process_id} must be in [0, "
                     f"--num_processes={num_processes}).")
  if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
      coordinator_address=coordinator_address, num_processes=num_processes,
      process_id=process_id, local_device_ids=local_device_ids,
      initialization_timeout=initialization_timeout)
  return True


def main_process_first(fn: Callable[[], T], name: str = "main_process_first") -> T:
  """Runs `fn` on process 0, then on the others (e.g. writes shared files once).

  Process 0 creates what is missing (a generated dataset, a vocabulary); the
  others then find it and only read. On one process this is just `fn()`.
  """
  if jax.process_count() == 1:
    return fn()
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f"{name}:done_on_main")
  if jax.process_index() != 0:
    result = fn()
  multihost_utils.sync_global_devices(f"{name}:done_everywhere")
  return result


def sync(name: str) -> None:
  """A barrier across all processes (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
