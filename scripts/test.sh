#!/usr/bin/env bash
# Set everything up, then run the whole test suite (unit + multi-process CPU tests) on the
# Python 3.11 stack, then the Python 3.12 + megatron-core 0.19 leg (scripts/test_py312.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
start=$SECONDS
.venv/bin/python -m pytest -q "$@"
echo "== py3.11 suite: $((SECONDS - start)) s"
if [ $# -eq 0 ]; then  # the whole suite: both legs
  bash scripts/test_py312.sh
fi
