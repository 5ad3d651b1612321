"""Joining JAX's multi-controller runtime: one process per GPU (or per host on TPU).

Four ways in, tried in this order:
  1. explicit: AMD_JAX_COORDINATOR (host:port), AMD_JAX_NUM_PROCESSES and
     AMD_JAX_PROCESS_ID in the environment (launch/local.sh, launch/multinode.sh);
  2. AMD_JAX_DISTRIBUTED=auto in the environment (launch/tpu.sh): JAX finds the
     cluster by itself, whatever its size (one process alone included);
  3. a cluster JAX detects by itself: SLURM (srun, launch/slurm.sbatch) or Open MPI
     (mpirun), when it reports more than one task;
  4. otherwise a single process: nothing to join.

With `auto` (jax.distributed.initialize() without arguments; read in jax 0.10's
jax/_src/clusters/) JAX looks, in this order, for: Open MPI (mpirun's
OMPI_MCA_orte_hnp_uri), SLURM (srun's SLURM_* variables), Cloud TPU on GKE
(TPU_WORKER_HOSTNAMES or TPU_PROCESS_ADDRESSES with TPU_WORKER_ID), a Cloud TPU VM
with libtpu installed (its metadata server gives the worker's number and the slice's
worker list, and the MEGASCALE_* values a multislice), and a Kubernetes Job (with
the `kubernetes` package, jax[k8s]).
On Cloud TPU the coordinator is worker 0, port 8482 (JAX_COORDINATOR_PORT changes
it). mpi4py is only used when asked for, so not here. When JAX finds none of them,
`auto` ends in one line rather than running as a single process.
"""

from __future__ import annotations

import logging
import os

import jax

from amd_jax import errors

log = logging.getLogger("amd_jax")

_CLUSTER_SIZES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
_EXPLICIT = ("AMD_JAX_COORDINATOR", "AMD_JAX_NUM_PROCESSES", "AMD_JAX_PROCESS_ID")


def initialize() -> None:
  """Calls jax.distributed.initialize when this run has several processes (or, with
  AMD_JAX_DISTRIBUTED=auto, lets JAX find its cluster)."""
  env = os.environ
  explicit = [k for k in _EXPLICIT if k in env]
  mode = env.get("AMD_JAX_DISTRIBUTED", "")   # empty: as if unset
  if mode not in ("", "auto"):
    raise errors.BadInput(f"AMD_JAX_DISTRIBUTED={mode!r}: the only value is 'auto' (JAX "
                          "finds its cluster: Cloud TPU VM, SLURM, Open MPI, Kubernetes); "
                          "unset it otherwise")
  if explicit:
    if mode:
      raise errors.BadInput(f"set either AMD_JAX_DISTRIBUTED=auto or {', '.join(_EXPLICIT)}, "
                            f"not both (found {explicit})")
    if len(explicit) != 3:
      raise errors.BadInput("set all of AMD_JAX_COORDINATOR, AMD_JAX_NUM_PROCESSES and "
                            f"AMD_JAX_PROCESS_ID for a multi-process run (only {explicit})")
    jax.distributed.initialize(coordinator_address=env["AMD_JAX_COORDINATOR"],
                               num_processes=int(env["AMD_JAX_NUM_PROCESSES"]),
                               process_id=int(env["AMD_JAX_PROCESS_ID"]))
  elif mode == "auto":
    try:
      jax.distributed.initialize()
    except ValueError as e:   # no cluster found: jax asks for the coordinator's address
      raise errors.BadInput(f"AMD_JAX_DISTRIBUTED=auto: JAX found no cluster here ({e}); run "
                            "it on the TPU VMs (launch/tpu.sh), under srun or mpirun, or "
                            "unset it") from None
  elif any(int(env.get(k, "1")) > 1 for k in _CLUSTER_SIZES):
    jax.distributed.initialize()
  else:
    return
  log.info("process %d of %d, %d local of %d devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
