#!/usr/bin/env bash
# GPU check: the plan's prediction for the largest benchmark (memory per device,
# FLOPs: python -m amd_jax.plan), then the GPU-only tests and the step benchmark at
# ViT-S/B/L sizes on one NVIDIA GPU, with a short table printed last; sized for under
# 5 minutes on one H100 (docs/benchmarks.md, "GPU check" and "Predicted vs measured").
#
#   launch/gpu_check.sh              # on the GPU machine
#   launch/gpu_check.sh --dry-run    # anywhere: the same steps on the CPU at tiny sizes
#   launch/gpu_check.sh --download   # where pip reaches an index: fetch $WHEELS first
#
# Packages: the lent GPU machines have Python 3.12 with jax (CUDA), flax, optax,
# orbax-checkpoint and pytest but not grain, tensorflow-datasets, ml-collections
# or av, and no network (docs/benchmarks.md, "GPU check"). When this Python cannot import
# amd_jax, the wheel files in $WHEELS (default .whl, ignored by git; with the
# device tool, carry [".whl"]) are installed into /tmp/amd_jax_site; without
# wheels, `pip install .[cuda13,dev]` from the index.
#
# Logs, results.jsonl and table.txt go to $OUT (the device tool's folder that
# comes back) or runs/gpu_check. Exits non-zero when a test or a benchmark failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MODE=check
case "${1:-}" in
  "") ;;
  --dry-run) MODE=dry-run ;;
  --download) MODE=download ;;
  *) echo "usage: $0 [--dry-run|--download]" >&2; exit 2 ;;
esac

if [[ -x .venv/bin/python ]]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
WHEELS=${WHEELS:-.whl}
# What the GPU machines lack, with everything it needs that they lack too
# (versions as in setup.cfg's ranges; pure-Python unless noted).
WHEEL_PINS=(
  grain==0.2.18 array-record==0.8.6 dm-tree==0.1.10          # compiled
  tensorflow-datasets==4.9.10 tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0
  immutabledict==4.3.1 simple-parsing==0.1.9 docstring-parser==0.18.0 termcolor==3.3.0
  toml==0.10.2 ml-collections==1.1.0 av==18.1.0 tensorboardx==2.6.5 portpicker==1.6.0
  importlib-resources==7.1.0
)

if [[ $MODE == download ]]; then
  mkdir -p "$WHEELS"
  # CPython 3.12 manylinux x86-64 builds, whatever this machine runs.
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" "${WHEEL_PINS[@]}"
  # promise (a tensorflow-datasets need) ships only as source: build its pure-Python wheel.
  "$PY" -m pip wheel -q --no-deps -w "$WHEELS" promise==2.3
  ls -l "$WHEELS"
  du -sh "$WHEELS"
  exit 0
fi

START=$SECONDS
# The benchmarks get what is left of this after setup and tests; each stops in time.
DEADLINE=$((START + ${GPU_CHECK_BUDGET_S:-280}))
export PYTHONUNBUFFERED=1           # the parts' output in the order they ran
LOGS=${OUT:-runs/gpu_check}
mkdir -p "$LOGS"
RESULTS=$LOGS/results.jsonl
: >"$RESULTS"
: >"$LOGS/bench.log"

section() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - START)); }

section "packages"
if ! "$PY" -c "import amd_jax.bench, pytest" 2>/dev/null; then
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into /tmp/amd_jax_site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/amd_jax_site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/amd_jax_site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "no wheels in $WHEELS: pip install .[cuda13,dev] from the index"
    "$PY" -m pip install -q --retries 1 --timeout 20 ".[cuda13,dev]"
  fi
fi
"$PY" -c "import amd_jax.bench, pytest" ||
  { echo "error: amd_jax still does not import (see above)" >&2; exit 1; }

section "device"
if [[ $MODE == dry-run ]]; then
  export JAX_PLATFORMS=cpu
else
  export JAX_PLATFORMS=cuda,cpu   # tests compare with the CPU
fi
source launch/env/gpu.sh
# A flag the installed jaxlib no longer knows aborts every process: go on without
# them, loudly, rather than lose the machine's time.
if ! probe=$("$PY" -c "import jax; jax.devices()" 2>&1); then
  if XLA_FLAGS="" "$PY" -c "import jax; jax.devices()" >/dev/null 2>&1; then
    echo "WARNING: this jaxlib rejects launch/env/gpu.sh's XLA_FLAGS; running without them:"
    echo "$probe" | tail -3
    export XLA_FLAGS=""
  else
    echo "error: jax cannot start its backends:" >&2
    echo "$probe" | tail -5 >&2
    exit 1
  fi
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,clocks.max.sm \
    --format=csv
else
  echo "nvidia-smi: not found"
fi
"$PY" -c "
import flax, jax, optax, orbax.checkpoint as ocp
print('jax', jax.__version__, '| flax', flax.__version__, '| optax', optax.__version__,
      '| orbax', ocp.__version__, '| backend', jax.default_backend(), jax.devices())"
if [[ $MODE == check ]] && ! "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')"; then
  echo "error: jax sees no GPU (pip install -e '.[cuda13]', or '.[cuda12]' for a driver older than R580), or use --dry-run" >&2
  exit 1
fi

section "prediction (python -m amd_jax.plan)"
# What the first benchmark row should show, compiled before it runs: compare its
# "peak GiB" with this total (docs/benchmarks.md, "Predicted vs measured").
if [[ $MODE == dry-run ]]; then
  PLAN=(--config=configs/pretrain.py:runlocal --target=cpu:1)
else
  gpu=h100
  nvidia-smi -L 2>/dev/null | grep -q H200 && gpu=h200
  PLAN=(--config=configs/pretrain.py:data=k400,model=B,backend=gpu --target=gpu:$gpu:1
        --batch-per-device=64)
fi
timeout 120 "$PY" -m amd_jax.plan "${PLAN[@]}" --out="$LOGS/plan" 2>&1 | tee "$LOGS/plan.log" ||
  echo "WARNING: the plan failed (see above); measuring all the same"

section "GPU tests (tests/test_gpu.py)"
test_rc=0
timeout 150 "$PY" -m pytest -m gpu tests/test_gpu.py -p no:cacheprovider -rs 2>&1 |
  tee "$LOGS/pytest.log" || test_rc=$?

section "step benchmark"
# Sizes for one H100: 64 clips per step, the memory target for ViT-B/ViT-L in 80 GB;
# MFU against a measured 790 TFLOP/s dense bfloat16 (docs/design.md#targets).
SIZES=(--frames 16 --size 224 --batch 64 --dtype bfloat16 --steps 5 --warmup 2 --devices 1
       --peak-tflops 790)
if [[ $MODE == dry-run ]]; then
  # Later arguments win: tiny models, float32, no peak measurement.
  SIZES+=(--student Mu/8x2 --teacher Mu/8x2 --frames 4 --size 32 --batch 2 --decoder-depth 1
          --dtype float32 --steps 1 --warmup 0 --peak-tflops 1)
fi
bench_failed=0

fail_line() {  # LABEL REASON: a failure row for the table
  "$PY" -c 'import json, sys; print(json.dumps({"label": sys.argv[1], "error": sys.argv[2]}))' \
    "$1" "$2" >>"$RESULTS"
  bench_failed=$((bench_failed + 1))
}

run_bench() {  # LABEL ARGS...: one `bench step`; its JSON line or a failure row
  local label=$1 left=$((DEADLINE - SECONDS)) rc=0 out err
  shift
  # A dry run's rows are the tiny models SIZES swaps in: say so in their names.
  [[ $MODE == dry-run ]] && label+=" (dry run: Mu/8x2 at 4x32x32)"
  if ((left < 45)); then
    fail_line "$label" "not run: ${left}s left of the time budget"
    return
  fi
  out=$(mktemp) err=$(mktemp)
  echo "$label: bench step $*"
  timeout $((left < 150 ? left : 150)) "$PY" -m amd_jax.bench step "$@" "${SIZES[@]}" \
    >"$out" 2>"$err" || rc=$?
  { echo "== $label: bench step $* ${SIZES[*]} (exit $rc)"; cat "$err"; } >>"$LOGS/bench.log"
  if ((rc == 0)); then
    grep '^{' "$out" >>"$RESULTS" || fail_line "$label" "printed no JSON line"
  else
    fail_line "$label" "exit $rc: $(grep -v '^\s*$' "$err" | tail -1 | cut -c1-160)"
  fi
  rm -f "$out" "$err"
}

# Most telling first: the budget may cut the last.
run_bench "AMD B/L" --mode amd --student B --teacher L
run_bench "AMD S/B" --mode amd --student S --teacher B
run_bench "VideoMAE B" --mode videomae --student B
run_bench "AMD B/L, XLA attention" --mode amd --student B --teacher L --attention xla

section "done"
verdict="tests $( ((test_rc == 0)) && echo passed || echo "FAILED (exit $test_rc)"),"
verdict+=" benchmarks $bench_failed failed, $((SECONDS - START)) s; logs in $LOGS"
echo "gpu_check: $verdict"
echo
"$PY" -m amd_jax.bench table "$RESULTS" | tee "$LOGS/table.txt"
((test_rc == 0 && bench_failed == 0))
