#!/usr/bin/env bash
# The Python 3.12 + megatron-core 0.19 leg of the suite: set up .venv312, run the README's first
# command there, then the parity matrix, the resume tests, generation and evaluation (megatron's inference API
# differs between the releases; resharding, the checkpoint errors, the CLI's bad-input cases and
# the kill-during-save, preemption and in-job-restart tests exercise nemo_lite's own code, the
# same on both, and run in the 3.11 suite).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON312:-python3.12} VENV=.venv312
start=$SECONDS
bash scripts/setup.sh
echo "== py3.12 setup: $((SECONDS - start)) s"
rm -rf runs/py312 && mkdir -p runs/py312
bash scripts/quickstart.sh log.log_dir=runs/py312 | tee runs/py312/quickstart.log
grep -q "^step 20/20 | loss" runs/py312/quickstart.log
echo "== py3.12 quickstart: $((SECONDS - start)) s"
.venv312/bin/python -m pytest -q -n "${NEMO_LITE_TEST_WORKERS:-2}" -p no:cacheprovider --durations=10 tests/distributed/test_parity.py \
  tests/distributed/test_resume.py tests/inference -k "not bad_cli_input and not cli_prints and not preemption_signal and not in_the_same_job and not during_checkpoint_save" "$@"
echo "== py3.12 leg: $((SECONDS - start)) s"
