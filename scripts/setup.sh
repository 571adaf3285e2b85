#!/usr/bin/env bash
# Create .venv (Python 3.11) and install nemo_lite with pinned CPU dependencies. Idempotent:
# re-runs only when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.nemo_lite-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "== installing nemo_lite and its dependencies into .venv (about a minute)"
  # torch first, from the pinned CPU build; any other torch request would fetch a CUDA build.
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
  rm -f .venv/.nemo_lite-*
  touch "$stamp"
fi
