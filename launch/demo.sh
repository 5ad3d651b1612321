#!/usr/bin/env bash
# One-minute AMD pre-training demo on this machine (CPU is fine), on the embedded
# dataset: launch/demo.sh [--workdir DIR] [--config.KEY=VALUE ...]
# DIR defaults to $WORKDIR, else runs/demo (relative to the repository root);
# rerunning with the same DIR resumes from its last checkpoint.
set -euo pipefail
caller_pwd="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/_venv.sh

workdir="${WORKDIR:-runs/demo}"
workdir_from_args=0
rest=()
while (($#)); do
  case "$1" in
    --workdir)
      (($# >= 2)) || { echo "error: --workdir needs a directory: launch/demo.sh --workdir DIR" >&2; exit 2; }
      workdir="$2"; workdir_from_args=1; shift 2 ;;
    --workdir=*)
      workdir="${1#--workdir=}"; workdir_from_args=1; shift ;;
    *)
      rest+=("$1"); shift ;;
  esac
done
[[ -n "$workdir" ]] || { echo "error: empty --workdir: launch/demo.sh --workdir DIR" >&2; exit 2; }
# A relative --workdir given on the command line means relative to where you ran it.
if ((workdir_from_args)) && [[ "$workdir" != /* ]]; then
  workdir="$caller_pwd/$workdir"
fi

start=$SECONDS
ensure_venv ""
rc=0
python -m amd_jax.main --config=configs/pretrain.py:runlocal --workdir="$workdir" ${rest[@]+"${rest[@]}"} || rc=$?
elapsed=$((SECONDS - start))

echo
if ((rc != 0)); then
  printf 'demo.sh: amd_jax.main failed (exit %d) after %dm%02ds; workdir %s\n' "$rc" $((elapsed / 60)) $((elapsed % 60)) "$workdir" >&2
  exit "$rc"
fi
printf 'demo.sh: done in %dm%02ds. Outputs in %s:\n' $((elapsed / 60)) $((elapsed % 60)) "$workdir"
echo "  metrics:       $workdir/metrics.jsonl   (one JSON object per logged step / evaluation)"
echo "  checkpoints:   $workdir/checkpoints/     (rerun with the same --workdir to resume)"
echo "  TensorBoard:   $workdir  (event files; view: pip install tensorboard && tensorboard --logdir $workdir)"
