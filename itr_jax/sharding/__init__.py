"""Scale-out: device meshes, parameter placement rules, the listwise loss on a
sharded global batch, and multi-host start-up.

* `create_mesh(config.mesh)`, `batch_sharding`, `global_batch` (mesh.py)
* `state_shardings(abstract_state, mesh, config.sharding)` (partitioning.py)
* `global_batch_loss`: the loss of any model on one device or a mesh, and
  its per-device parts `local_loss`, `relevance_rows` (global_batch_loss.py)
* `initialize(mode, coordinator_address=..., ...)` (multihost.py)
* `memory_stats(compiled)`: per-device bytes from XLA (memory.py)
"""
from itr_jax.sharding.global_batch_loss import global_batch_loss
from itr_jax.sharding.global_batch_loss import local_loss
from itr_jax.sharding.global_batch_loss import relevance_rows
from itr_jax.sharding.mesh import BATCH_AXIS_NAMES
from itr_jax.sharding.mesh import batch_axes
from itr_jax.sharding.mesh import batch_sharding
from itr_jax.sharding.mesh import check_batch_size
from itr_jax.sharding.mesh import create_mesh
from itr_jax.sharding.mesh import global_batch
from itr_jax.sharding.mesh import num_batch_shards
from itr_jax.sharding.mesh import replicated
from itr_jax.sharding.memory import memory_stats
from itr_jax.sharding.memory import peak_bytes_per_device
from itr_jax.sharding.multihost import initialize
from itr_jax.sharding.multihost import main_process_first
from itr_jax.sharding.partitioning import FSDP_RULES
from itr_jax.sharding.partitioning import state_shardings
from itr_jax.sharding.partitioning import tree_shardings
from itr_jax.sharding.partitioning import with_shardings

__all__ = [
    "BATCH_AXIS_NAMES",
    "FSDP_RULES",
    "batch_axes",
    "batch_sharding",
    "check_batch_size",
    "create_mesh",
    "global_batch",
    "global_batch_loss",
    "initialize",
    "local_loss",
    "main_process_first",
    "memory_stats",
    "num_batch_shards",
    "peak_bytes_per_device",
    "relevance_rows",
    "replicated",
    "state_shardings",
    "tree_shardings",
    "with_shardings",
]
