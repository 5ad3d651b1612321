#!/usr/bin/env bash
# The embedded study on this machine (CPU is fine): an AMD student distilled from
# the released VideoMAE teacher (amd_jax/proj/study/teacher) and the same student
# pre-trained as plain VideoMAE, both fine-tuned and tested beside a student
# trained from scratch, with linear probes and plots, over 3 seeds (amd_jax/proj/study/).
#
#   launch/demo.sh [--workdir DIR] [--full] [--seeds N] [--jobs N] [--ablation NAME]
#     NAME: alignment | teacher-ratio | rec-loss | student-ratio | target-norm | align-loss
#           (the AMD student's pre-training), labels (every model's fine-tuning)
#
# Default: about 9 minutes on 2 CPU cores (two runs at a time, --jobs). --full:
# longer runs, every test video.
# DIR defaults to $WORKDIR, else runs/demo (relative to the repository root);
# rerunning with the same DIR reuses every finished stage and resumes an
# interrupted one.
set -euo pipefail
caller_pwd="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/_venv.sh

usage="launch/demo.sh [--workdir DIR] [--full] [--seeds N] [--jobs N] [--ablation NAME]"
workdir="${WORKDIR:-runs/demo}"
workdir_from_args=0
size=default
rest=()
while (($#)); do
  case "$1" in
    --workdir)
      (($# >= 2)) || { echo "error: --workdir needs a directory: $usage" >&2; exit 2; }
      workdir="$2"; workdir_from_args=1; shift 2 ;;
    --workdir=*)
      workdir="${1#--workdir=}"; workdir_from_args=1; shift ;;
    --full)
      size=full; shift ;;
    --seeds|--jobs|--ablation)
      (($# >= 2)) || { echo "error: $1 needs a value: $usage" >&2; exit 2; }
      rest+=("$1" "$2"); shift 2 ;;
    --seeds=*|--jobs=*|--ablation=*)
      rest+=("$1"); shift ;;
    -h|--help)
      echo "$usage"; exit 0 ;;
    *)
      echo "error: unknown argument '$1': $usage" >&2; exit 2 ;;
  esac
done
[[ -n "$workdir" ]] || { echo "error: empty --workdir: $usage" >&2; exit 2; }
# A relative --workdir given on the command line means relative to where you ran it.
if ((workdir_from_args)) && [[ "$workdir" != /* ]]; then
  workdir="$caller_pwd/$workdir"
fi

start=$SECONDS
ensure_venv ""
# The study is a CPU program; a .venv that launch/test.sh filled also holds libtpu and
# the CUDA plugin, which would look for their hardware (and print why not) first.
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
rc=0
python -m amd_jax.proj.study --workdir "$workdir" --size "$size" ${rest[@]+"${rest[@]}"} || rc=$?
elapsed=$((SECONDS - start))

echo
if ((rc != 0)); then
  printf 'demo.sh: the study failed (exit %d) after %dm%02ds; rerun the same command to resume (workdir %s)\n' \
    "$rc" $((elapsed / 60)) $((elapsed % 60)) "$workdir" >&2
  exit "$rc"
fi
printf 'demo.sh: done in %dm%02ds. Outputs in %s:\n' $((elapsed / 60)) $((elapsed % 60)) "$workdir"
echo "  results:   $workdir/results.json (or ablation_NAME.json)   plots: $workdir/*.png"
echo "  runs:      $workdir/seed_*/{amd,videomae,scratch}_student/{pretrain,finetune}/, probes: $workdir/probe.json"
echo "             (each: metrics.jsonl, checkpoints/, config.json; TensorBoard events in tensorboard/)"
