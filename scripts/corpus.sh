#!/usr/bin/env bash
# The offline data pipeline: Python-stdlib corpus -> byte-level BPE -> megatron .bin/.idx.
# Writes data/stdlib.jsonl, data/tokenizer/, data/stdlib.{bin,idx,meta.json}; no network.
#   bash scripts/corpus.sh [VOCAB_SIZE [WORKERS]]        (defaults: 8192, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/nemo-lite ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
vocab="${1:-8192}"
workers="${2:-2}"
nemo-lite data corpus --output data/stdlib.jsonl
nemo-lite data train-tokenizer --input data/stdlib.jsonl --vocab-size "$vocab" --output data/tokenizer
nemo-lite data preprocess --input data/stdlib.jsonl --output-prefix data/stdlib \
  --tokenizer data/tokenizer --workers "$workers"
