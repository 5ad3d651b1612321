#!/usr/bin/env bash
# Runs the test suite: launch/test.sh [PYTEST ARGS...]
# e.g. launch/test.sh -m "not slow"    launch/test.sh tests/test_masking.py -x -n 0
# Two worker processes, each taking whole files (pytest-xdist: -n 2 --dist
# loadfile), the files with the most slow tests first (tests/conftest.py orders
# them; --no-loadscope-reorder keeps that order); -n 0 runs in this process (for
# -s, --pdb or one quick file).
# Needs only Python >= 3.11 and pip; creates/reuses .venv with the dev, convert
# (torch CPU + transformers for the parity tests) and plan extras (libtpu and the
# CUDA compiler, for tests/test_plan.py's compiles for TPUs and GPUs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source launch/_venv.sh

start=$SECONDS
ensure_venv dev,convert,plan
rc=0
python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@" || rc=$?
elapsed=$((SECONDS - start))
printf 'test.sh: pytest exited %d after %dm%02ds\n' "$rc" $((elapsed / 60)) $((elapsed % 60)) >&2
exit "$rc"
