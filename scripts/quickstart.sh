#!/usr/bin/env bash
# Set everything up, then pretrain the tiny_gpt recipe on CPU: TP=2 over 2 ranks, 20 steps,
# one line per step, checkpoints and TensorBoard events under runs/tiny_gpt/<date>/.
# (PYTHON=python3.12 VENV=.venv312: the same on Python 3.12 + megatron-core 0.19; see setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/${VENV:-.venv}/bin:$PATH"
exec nemo llm pretrain --factory tiny_gpt trainer.max_steps=20 \
  log.log_dir=runs log.name=tiny_gpt resume.resume_if_exists=False -y "$@"
