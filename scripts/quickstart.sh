#!/usr/bin/env bash
# Set everything up, then pretrain a tiny GPT on CPU with tensor parallelism over 2 ranks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/pretrain_tiny.py "$@"
