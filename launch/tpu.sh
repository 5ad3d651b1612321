#!/usr/bin/env bash
# Cloud TPU VMs: one training process per host on every worker of a TPU slice (one
# host or many: the same command), started over `gcloud compute tpus tpu-vm ssh
# --worker=all`. JAX reads the slice's layout from the TPU VMs' metadata
# (AMD_JAX_DISTRIBUTED=auto, amd_jax/distributed.py).
#
#   TPU_NAME=my-v5e-32 ZONE=us-west4-a [PROJECT=my-project] [REPO_DIR=amd_jax] \
#   CONFIG=configs/pretrain.py:data=k400,model=B,backend=tpu WORKDIR=/mnt/shared/runs/amd_b \
#     launch/tpu.sh [--dry-run] [--config.KEY=VALUE ...]
#   TPU_NAME=... ZONE=... launch/tpu.sh [--dry-run] --setup
#
# The code is not cloned there: copy this checkout (without its .venv) to every
# worker first, at REPO_DIR (default: this checkout's path, as below; a relative
# REPO_DIR is under the remote home):
#   gcloud compute tpus tpu-vm scp --recurse --worker=all --zone=ZONE \
#     "$PWD" TPU_NAME:"$(dirname "$PWD")"
# then --setup makes REPO_DIR/.venv on every worker (pip install -e '.[tpu]'), with
# PYTHON there (default python3; it must be >= 3.11: e.g. PYTHON=python3.11).
# --dry-run (first) prints the gcloud command, one line, instead of running it.
# WORKDIR: a directory every worker sees at the same path (a Filestore/NFS mount),
# not a gs:// URL. DATA and teacher paths in CONFIG are read on every worker.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
die() { echo "error: $*" >&2; exit 2; }

dry_run=0 setup=0
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --setup) setup=1; shift ;;
    *) break ;;
  esac
done
((setup == 0 || $# == 0)) || die "--setup takes no other arguments (got $*)"

[[ -n "${TPU_NAME:-}" ]] || die "Must set TPU_NAME (the TPU VM, as gcloud compute tpus tpu-vm list names it)"
[[ -n "${ZONE:-}" ]] || die "Must set ZONE (the TPU VM's zone, e.g. us-west4-a)"
REPO_DIR="${REPO_DIR:-$(cd "$here/.." && pwd)}"
if ((!setup)); then
  [[ -n "${CONFIG:-}" ]] || die "Must set CONFIG, e.g. configs/pretrain.py:data=k400,model=B,backend=tpu"
  [[ -n "${WORKDIR:-}" ]] || die "Must set WORKDIR on a filesystem every worker mounts"
  [[ ! "$WORKDIR" =~ ^[A-Za-z][A-Za-z0-9+.-]*:// ]] ||
    die "WORKDIR=$WORKDIR is a URL: use a directory every worker mounts (e.g. Filestore/NFS)"
fi
((dry_run)) || command -v gcloud >/dev/null 2>&1 ||
  die "gcloud not found: install the Google Cloud CLI, or use --dry-run"

# The remote command, each value quoted for the remote shell (a config argument's
# commas and spaces survive the ssh hop); ~/ stays unquoted so that it expands there.
if [[ "$REPO_DIR" == "~/"* ]]; then
  remote="cd ~/$(printf '%q' "${REPO_DIR#\~/}")"
else
  remote="cd $(printf '%q' "$REPO_DIR")"
fi
if ((setup)); then
  remote+=" && $(printf '%q' "${PYTHON:-python3}") -m venv .venv"
  remote+=" && .venv/bin/pip install -e '.[tpu]'"
else
  remote+=" && if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi"
  remote+=" && . launch/env/tpu.sh && export AMD_JAX_DISTRIBUTED=auto"
  remote+=" && exec python3 -m amd_jax.main $(printf '%q' "--config=$CONFIG")"
  remote+=" $(printf '%q' "--workdir=$WORKDIR")"
  for arg in "$@"; do
    remote+=" $(printf '%q' "$arg")"
  done
fi

cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" "--zone=$ZONE")
[[ -z "${PROJECT:-}" ]] || cmd+=("--project=$PROJECT")
cmd+=(--worker=all "--command=$remote")
if ((dry_run)); then
  printf '%q' "${cmd[0]}"
  printf ' %q' "${cmd[@]:1}"
  echo
else
  exec "${cmd[@]}"
fi
