#!/usr/bin/env bash
# Set everything up, then run the whole test suite (unit + multi-process CPU tests) on the
# Python 3.11 stack, then the Python 3.12 + megatron-core 0.19 leg (scripts/test_py312.sh).
# With arguments, only pytest on the 3.11 stack runs, with them (e.g. a test file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
setup312=""
if [ $# -eq 0 ]; then  # both legs: the 3.12 environment installs while the 3.11 suite runs
  mkdir -p runs
  (PYTHON=${PYTHON312:-python3.12} VENV=.venv312 bash scripts/setup.sh > runs/py312_setup.log 2>&1) &
  setup312=$!
fi
# two pytest workers: the suite's processes leave half of 2 cores idle when run one at a time
# (tests/conftest.py groups the tests so module fixtures and the test daemons start once)
start=$SECONDS
.venv/bin/python -m pytest -q -n "${NEMO_LITE_TEST_WORKERS:-2}" --durations=25 "$@"
echo "== py3.11 suite: $((SECONDS - start)) s"
if [ -n "$setup312" ]; then
  wait "$setup312" || { cat runs/py312_setup.log; exit 1; }
  bash scripts/test_py312.sh
fi
