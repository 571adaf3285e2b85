"""Checks that need a GPU, run by scripts/device_check.sh on a lent machine (`pytest -m gpu`).

NEMO_LITE_TEST_DEVICE=cuda (the default when a GPU is present) or cpu (device_check.sh --cpu,
in CI: the same steps on the CPU, which proves the checks themselves). Without a GPU and without
that variable they are skipped. Each run is its own process (tests/gpu/scripts/steps.py).

- NCCL is the process group on a GPU; fp32 losses on the device equal the same steps on the
  CPU to 1e-4 (different kernels, same arithmetic);
- bf16-mixed trains (finite, falling loss);
- a checkpoint saved on the device loads on the CPU with the same weights, and back;
- the comm-overlap callback's settings reach megatron's DDP on the real process group, and the
  losses do not change;
- the core attention uses torch's SDPA kernels on CUDA ("auto"), with the same losses as
  megatron's explicit scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DEVICE = os.environ.get("NEMO_LITE_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else None)
SCRIPT = Path(__file__).parent / "scripts" / "steps.py"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    DEVICE is None, reason="no CUDA GPU here (NEMO_LITE_TEST_DEVICE=cpu runs these on the CPU)")]


def steps(work: Path, tag: str, runs: dict[str, dict]) -> dict[str, dict]:
    """`runs` in one process (one device kind), in order; each run's record by name."""
    out, spec = work / f"{tag}.json", work / f"{tag}_runs.json"
    spec.write_text(json.dumps(runs))
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), str(spec)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, (proc.stdout[-2000:] + proc.stderr)[-8000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """Every run the checks compare, in four processes: device, CPU, device, (CPU mode: all CPU).
    The checkpoint chain: saved on the device, restored on the CPU and saved, restored back."""
    work = tmp_path_factory.mktemp("gpu")
    out = steps(work, "device", {
        "fp32_local": {"device": DEVICE, "attention": "local", "save": str(work / "a")},
        "bf16": {"device": DEVICE, "precision": "bf16-mixed", "steps": 8},
        "plain": {"device": DEVICE},
        "overlap": {"device": DEVICE, "overlap": True},
        "flash": {"device": DEVICE, "attention": "flash"},
    })
    saved = next((work / "a" / "checkpoints").glob("step=4-*"))
    out |= steps(work, "cpu", {
        "cpu_fp32_local": {"device": "cpu", "attention": "local"},
        "cpu_load": {"device": "cpu", "restore": str(saved), "steps": 2, "save": str(work / "b")},
    })
    back = next((work / "b" / "checkpoints").glob("step=2-*"))
    out |= steps(work, "device_back", {
        "device_load": {"device": DEVICE, "restore": str(back), "steps": 1}})
    return out


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def test_nccl_and_fp32_losses_match_the_cpu(runs):
    here, cpu = runs["fp32_local"], runs["cpu_fp32_local"]
    assert here["backend"] == ("nccl" if DEVICE == "cuda" else "gloo"), here["backend"]
    assert here["device"].startswith(DEVICE)
    diffs = [rel(a, b) for a, b in zip(here["losses"], cpu["losses"], strict=True)]
    print(f"GPU fp32 vs CPU: max rel loss diff {max(diffs):.2e}")
    assert len(diffs) == 4 and max(diffs) <= 1e-4, (here["losses"], cpu["losses"])


def test_bf16_mixed_trains(runs):
    losses = runs["bf16"]["losses"]
    assert len(losses) == 8 and all(map(torch.isfinite, torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


def test_checkpoint_from_the_device_loads_on_the_cpu_and_back(runs):
    saved, on_cpu, back = runs["fp32_local"], runs["cpu_load"], runs["device_load"]
    assert rel(on_cpu["start_checksum"], saved["end_checksum"]) <= 1e-12
    assert rel(back["start_checksum"], on_cpu["end_checksum"]) <= 1e-12


def test_comm_overlap_settings_reach_megatron_ddp(runs):
    plain, overlap = runs["plain"], runs["overlap"]
    assert overlap["ddp"]["overlap_grad_reduce"] and overlap["ddp"]["overlap_param_gather"]
    assert overlap["ddp"]["use_distributed_optimizer"]
    assert not plain["ddp"]["overlap_grad_reduce"]
    diffs = [rel(a, b) for a, b in zip(overlap["losses"], plain["losses"], strict=True)]
    assert max(diffs) <= 1e-5, (overlap["losses"], plain["losses"])


def test_sdpa_on_cuda_gives_the_explicit_scores_losses(runs):
    auto, flash, local = runs["plain"], runs["flash"], runs["fp32_local"]
    assert auto["uses_sdpa"] is (DEVICE == "cuda") and flash["uses_sdpa"]
    assert not local["uses_sdpa"]
    diffs = [rel(a, b) for a, b in zip(flash["losses"], local["losses"], strict=True)]
    print(f"SDPA vs explicit scores on {DEVICE}: max rel loss diff {max(diffs):.2e}")
    assert max(diffs) <= 1e-4, (flash["losses"], local["losses"])
