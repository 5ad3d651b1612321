#!/usr/bin/env bash
# Plans the paper's runs (Tables S1-S3) for accelerators this machine does not have:
# one `python -m amd_jax.plan` per row into OUT/ROW/plan.json, then the Markdown table
# of docs/benchmarks.md ("Planned without a device").
#
#   launch/plan_paper.sh [OUT] [ROW_PATTERN]     # default OUT: runs/plan_paper
#
# A row whose plan.json exists is skipped, so a stopped run picks up where it was.
# ROW_PATTERN (a grep -E pattern) keeps only the matching rows. Needs the `plan`
# extra (launch/test.sh installs it). About 90 minutes on 2 cores, most of it the
# TPU compiles of ViT-L programs.
#
# Batches per device are the paper's (Supp. A, on A100-80G): pre-training 2048 clips
# on 32 GPUs = 64; fine-tuning 512 (ViT-S SSV2, 16 GPUs) and 1024 (ViT-B K400,
# 32 GPUs) = 32; AVA 128 on 32 GPUs = 4; VideoMAE's teachers 1024 on 64 V100 = 16.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/_venv.sh
ensure_venv plan

OUT=${1:-runs/plan_paper}
PATTERN=${2:-.}
mkdir -p "$OUT"

row() {  # NAME TARGET PER_DEVICE CONFIG [--config.KEY=VALUE ...]
  local name=$1 target=$2 per_device=$3 config=$4
  shift 4
  [[ $name =~ $PATTERN ]] || return 0
  if [[ -f $OUT/$name/plan.json ]]; then
    echo "$name: done before"
    return 0
  fi
  local start=$SECONDS rc=0
  echo "$name: $config on $target, $per_device per device"
  python -m amd_jax.plan --config="$config" --target="$target" --out="$OUT/$name" \
    --batch-per-device="$per_device" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s"
}

for t in gpu:h100:8 tpu:v5e:2x4 gpu:a100-80:8 tpu:v5p:2x2x1; do
  tag=${t//:/_}
  row "s1_amd_b_l__$tag" "$t" 64 "configs/pretrain.py:data=k400,model=B,backend=${t%%:*}"
  row "s1_amd_s_l__$tag" "$t" 64 "configs/pretrain.py:data=k400,model=S,backend=${t%%:*}"
  row "s1_videomae_b__$tag" "$t" 16 "configs/videomae.py:data=k400,model=B,backend=${t%%:*}"
  row "s1_videomae_l__$tag" "$t" 16 "configs/videomae.py:data=k400,model=L,backend=${t%%:*}"
  row "s2_ft_s_ssv2__$tag" "$t" 32 "configs/finetune.py:data=ssv2,model=S,backend=${t%%:*}"
  row "s2_ft_b_k400__$tag" "$t" 32 "configs/finetune.py:data=k400,model=B,backend=${t%%:*}"
  row "s3_ava_b__$tag" "$t" 4 "configs/transfer.py:data=ava,model=B,backend=${t%%:*}"
done
# Layouts of the largest program: FSDP over all 8 devices, rematerialisation, and
# the largest batch that fits, on the smallest and the largest memory.
for t in tpu:v5e:2x4 gpu:h100:8; do
  tag=${t//:/_}
  b="configs/pretrain.py:data=k400,model=B,backend=${t%%:*}"
  row "s1_amd_b_l_fsdp8__$tag" "$t" 64 "$b" --config.mesh.data=1 --config.mesh.fsdp=8
  row "s1_amd_b_l_remat__$tag" "$t" 64 "$b" --config.model.remat=True
  row "s1_amd_b_l_maxbatch__$tag" "$t" 64 "$b" --max-batch
done
python -m amd_jax.plan.table "$OUT"
