#!/usr/bin/env bash
# Create a virtual environment and install nemo_lite with pinned CPU dependencies. Idempotent:
# re-runs only when pyproject.toml or the constraints changed.
#   default:                      .venv, Python 3.11, constraints.txt (torch 2.13.0 CPU from disk)
#   PYTHON=python3.12 VENV=.venv312: Python 3.12, constraints-py312.txt (megatron-core 0.19)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {  # $1: wanted version, e.g. 3.11
  local candidate
  for candidate in "python$1" "$(pyenv root 2>/dev/null)/versions/$1"*/bin/"python$1"; do
    if "$candidate" -c "" >/dev/null 2>&1; then command -v "$candidate"; return; fi
  done
  [ "$1" = 3.11 ] && command -v python3 && return
  echo "error: Python $1 not found (set PYTHON=/path/to/python$1)" >&2; exit 2
}

VENV=${VENV:-.venv}
if [ -z "${PYTHON:-}" ]; then PYTHON=$(find_python 3.11)
elif ! "$PYTHON" -c "" >/dev/null 2>&1; then PYTHON=$(find_python "${PYTHON#python}"); fi
minor=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
constraints=constraints.txt
[ "$minor" = 3.12 ] && constraints=constraints-py312.txt
torch=$(grep '^torch==' "$constraints")

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.nemo_lite-$(cat pyproject.toml "$constraints" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "== installing nemo_lite and its dependencies into $VENV (Python $minor, $constraints)"
  # torch first, from the pinned build; any other torch request would fetch another build.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" "$torch"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -e ".[dev]"
  rm -f "$VENV"/.nemo_lite-*
  touch "$stamp"
fi
