#!/usr/bin/env bash
# Plain multi-node training without a scheduler: run this once on every node.
#
#   COORDINATOR=node0:12345 NNODES=4 NODE_RANK=0..3 [GPUS_PER_NODE=8] \
#   CONFIG=configs/pretrain.py:data=ssv2,model=B,backend=gpu WORKDIR=/shared/runs/amd_b \
#     launch/multinode.sh [--config.KEY=VALUE ...]
#
# One process per GPU (process id = NODE_RANK × GPUS_PER_NODE + local GPU); node
# 0's first process hosts the coordinator at COORDINATOR. WORKDIR must be on a
# filesystem every node sees (checkpoints are written collectively).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/_spawn.sh"

: "${COORDINATOR:?Must set COORDINATOR=host:port of node 0 (reachable from every node)}"
: "${NNODES:?Must set NNODES (number of nodes)}"
: "${NODE_RANK:?Must set NODE_RANK (0..NNODES-1, 0 on the coordinator node)}"
: "${CONFIG:?Must set CONFIG, e.g. configs/pretrain.py:data=ssv2,model=B,backend=gpu}"
: "${WORKDIR:?Must set WORKDIR on a shared filesystem}"
if [[ -z "${GPUS_PER_NODE:-}" ]]; then
  GPUS_PER_NODE="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
fi
((GPUS_PER_NODE > 0)) || { echo "error: no GPU found; set GPUS_PER_NODE" >&2; exit 2; }
((NODE_RANK >= 0 && NODE_RANK < NNODES)) ||
  { echo "error: NODE_RANK=$NODE_RANK is outside 0..$((NNODES - 1))" >&2; exit 2; }

cd "$here/.."
[[ -f .venv/bin/activate ]] && source .venv/bin/activate
source "$here/env/gpu.sh"
spawn_and_wait $((NODE_RANK * GPUS_PER_NODE)) "$GPUS_PER_NODE" $((NNODES * GPUS_PER_NODE)) \
  "$COORDINATOR" 1 -- python -m amd_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
