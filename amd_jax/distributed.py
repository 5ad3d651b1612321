"""Joining JAX's multi-controller runtime: one process per GPU (or per host on TPU).

Three ways in, tried in this order:
  1. explicit: AMD_JAX_COORDINATOR (host:port), AMD_JAX_NUM_PROCESSES and
     AMD_JAX_PROCESS_ID in the environment (launch/local.sh, launch/multinode.sh);
  2. a cluster JAX detects by itself: SLURM (srun, launch/slurm.sbatch) or Open MPI
     (mpirun), when it reports more than one task;
  3. otherwise a single process: nothing to join.
"""

from __future__ import annotations

import logging
import os

import jax

from amd_jax import errors

log = logging.getLogger("amd_jax")

_CLUSTER_SIZES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def initialize() -> None:
  """Calls jax.distributed.initialize when this run has several processes."""
  env = os.environ
  explicit = [k for k in ("AMD_JAX_COORDINATOR", "AMD_JAX_NUM_PROCESSES", "AMD_JAX_PROCESS_ID")
              if k in env]
  if explicit:
    if len(explicit) != 3:
      raise errors.BadInput("set all of AMD_JAX_COORDINATOR, AMD_JAX_NUM_PROCESSES and "
                            f"AMD_JAX_PROCESS_ID for a multi-process run (only {explicit})")
    jax.distributed.initialize(coordinator_address=env["AMD_JAX_COORDINATOR"],
                               num_processes=int(env["AMD_JAX_NUM_PROCESSES"]),
                               process_id=int(env["AMD_JAX_PROCESS_ID"]))
  elif any(int(env.get(k, "1")) > 1 for k in _CLUSTER_SIZES):
    jax.distributed.initialize()
  else:
    return
  log.info("process %d of %d, %d local of %d devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
