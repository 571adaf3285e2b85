#!/usr/bin/env bash
# Prepare, here, what the lent GPU machine lacks: the exact cp312 manylinux wheels of
# megatron-core, fiddle and fiddle's missing dependencies, in .whl/ (git-ignored; the device
# tool carries it: `carry: [".whl"]`). The machine has Python 3.12, torch 2.11, lightning,
# pytest, pyyaml...; nemo-run is not needed there (the checks and the benchmark do not launch).
# Then run there, in one call:  bash scripts/device_check.sh   (see that script).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(megatron-core==0.16.1 fiddle==0.3.1 libcst==1.8.6 graphviz==0.21)
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for wheel in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$wheel"
done
ls -l .whl
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "wheels $((total / 1024)) KiB + working tree $((tree / 1024)) KiB (limit 64 MiB per call)"
if [ $((total + tree)) -ge $((64 * 1024 * 1024)) ]; then
  echo "error: the wheels and the tree exceed the device tool's 64 MiB" >&2; exit 1
fi
