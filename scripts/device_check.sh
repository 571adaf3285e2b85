#!/usr/bin/env bash
# The one command to run on a lent GPU machine (device tool: carry [".whl"], timeout_s 540):
#   bash scripts/device_check.sh          # GPU: installs .whl/ (scripts/device_kit.sh) first
#   bash scripts/device_check.sh --cpu    # here / in CI: the same steps, tiny shapes, on CPU
# Steps, each with its own time limit (all under 8 minutes on an H200):
#   versions and the GPU; the GPU tests (pytest -m gpu: NCCL, fp32 vs CPU, bf16, checkpoint
#   device <-> CPU, comm overlap, SDPA attention); benchmarks/gpu_throughput.py on the
#   Llama-3.2-1B shape, bf16, seq 2048 and 4096 (tokens/s, TFLOP/s, MFU against the datasheet
#   and the measured peak, peak memory against the estimate).
# Every figure goes to $OUT (the device tool's output folder; here runs/device_check):
# device_check.log, figures.json, throughput_2048.json, throughput_4096.json, gpu_tests.xml.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
OUT=${OUT:-$PWD/runs/device_check}
mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.log") 2>&1
if [ "$MODE" = gpu ]; then
  PY=python3
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "error: no wheels: run scripts/device_kit.sh here first"; exit 2; }
  export PYTHONPATH="/tmp/site:$PWD" NEMO_LITE_TEST_DEVICE=cuda
  BENCH=(--measure-peak)
  SEQS=(2048 4096)
else
  PY=${PY:-.venv/bin/python}
  export PYTHONPATH="$PWD" NEMO_LITE_TEST_DEVICE=cpu
  BENCH=(--device cpu --tiny --measure-peak)
  SEQS=(64 128)
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
: > "$OUT/steps.jsonl.tmp"
step() {  # name, seconds, command...
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@"
  rc=$?
  echo "== $name: rc=$rc, $((SECONDS - start)) s"
  printf '{"step": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" $((SECONDS - start)) >> "$OUT/steps.jsonl.tmp"
}
step versions 60 "$PY" -c '
import json, platform, torch
out = {"mode": "'"$MODE"'", "python": platform.python_version(), "torch": torch.__version__,
       "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
for name in ("megatron.core", "lightning", "fiddle"):
    try:
        module = __import__(name, fromlist=["_"]); out[name] = getattr(module, "__version__", "?")
    except Exception as error:
        out[name] = f"missing: {error}"
print(json.dumps(out)); open("'"$OUT"'/versions.json.tmp", "w").write(json.dumps(out))'
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
# its own temporary root: a pytest session in /tmp/pytest-of-$USER cleans up older sessions'
# directories there, which may belong to a suite running beside it (the CI's)
gpu_tmp=$(mktemp -d "${TMPDIR:-/tmp}/nemo_lite_gpu_tests.XXXXXX")
step gpu_tests 270 "$PY" -m pytest -q -s -p no:cacheprovider -m gpu tests/gpu --junitxml="$OUT/gpu_tests.xml" --basetemp="$gpu_tmp"
rm -rf "$gpu_tmp"
for seq in "${SEQS[@]}"; do
  mbs=2; [ "$seq" -ge 4096 ] && mbs=1
  step "throughput_$seq" 150 "$PY" benchmarks/gpu_throughput.py "${BENCH[@]}" --seq "$seq" \
    --mbs "$mbs" --gbs 8 --out "$OUT/throughput_$seq.json"
done
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
figures = {"versions": json.loads((out / "versions.json.tmp").read_text()) if (out / "versions.json.tmp").exists() else None,
           "steps": [json.loads(l) for l in (out / "steps.jsonl.tmp").read_text().splitlines()],
           "throughput": {p.stem: json.loads(p.read_text()).get("result") for p in sorted(out.glob("throughput_*.json"))}}
(out / "figures.json").write_text(json.dumps(figures, indent=1))
for tmp in out.glob("*.tmp"):
    tmp.unlink()
failed = [s["step"] for s in figures["steps"] if s["rc"]]
print("device_check:", "all steps passed" if not failed else f"FAILED: {', '.join(failed)}")
sys.exit(1 if failed else 0)
PYEOF
