#!/usr/bin/env bash
# N processes of COMMAND on this host, joined by a local coordinator: the
# multi-host code path on one machine.
#
#   launch/local.sh -n N [--cpu-devices K] -- COMMAND...
#   e.g. launch/local.sh -n 2 --cpu-devices 2 -- python -m amd_jax.main \
#            --config=configs/pretrain.py:runlocal --workdir=runs/local2
#
# --cpu-devices K: each process gets K fake CPU devices (no GPU needed); without
# it each process gets one local GPU. Waits for all, forwards SIGTERM/SIGINT, and
# fails (stopping the rest) as soon as one process fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_spawn.sh"

n="" cpu_devices=""
while (($#)); do
  case "$1" in
    -n) n="${2:?-n needs a number}"; shift 2 ;;
    --cpu-devices) cpu_devices="${2:?--cpu-devices needs a number}"; shift 2 ;;
    --) shift; break ;;
    *) echo "error: unknown option $1; usage: launch/local.sh -n N [--cpu-devices K] -- COMMAND..." >&2
       exit 2 ;;
  esac
done
: "${n:?Must set -n N (number of processes)}"
(($# > 0)) || { echo "error: no COMMAND after --" >&2; exit 2; }

gpu_mode=1
if [[ -n "$cpu_devices" ]]; then
  gpu_mode=0
  source "$here/env/cpu.sh"
  export XLA_FLAGS="$XLA_FLAGS --xla_force_host_platform_device_count=$cpu_devices"
else
  source "$here/env/gpu.sh"
fi
spawn_and_wait 0 "$n" "$n" "127.0.0.1:$(free_port)" "$gpu_mode" -- "$@"
