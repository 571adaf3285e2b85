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


def steps(tmp_path: Path, name: str, device: str, *args: str) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--device", device, *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def test_nccl_and_fp32_losses_match_the_cpu(tmp_path):
    here = steps(tmp_path, "device", DEVICE, "--attention", "local")
    cpu = steps(tmp_path, "cpu", "cpu", "--attention", "local")
    assert here["backend"] == ("nccl" if DEVICE == "cuda" else "gloo"), here["backend"]
    assert here["device"].startswith(DEVICE)
    diffs = [rel(a, b) for a, b in zip(here["losses"], cpu["losses"], strict=True)]
    print(f"GPU fp32 vs CPU: max rel loss diff {max(diffs):.2e}")
    assert len(diffs) == 4 and max(diffs) <= 1e-4, (here["losses"], cpu["losses"])


def test_bf16_mixed_trains(tmp_path):
    run = steps(tmp_path, "bf16", DEVICE, "--precision", "bf16-mixed", "--steps", "8")
    losses = run["losses"]
    assert len(losses) == 8 and all(map(torch.isfinite, torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses


def test_checkpoint_from_the_device_loads_on_the_cpu_and_back(tmp_path):
    saved = steps(tmp_path, "save", DEVICE, "--save", str(tmp_path / "a"))
    ckpt = next((tmp_path / "a" / "checkpoints").glob("step=4-*"))
    on_cpu = steps(tmp_path, "cpu_load", "cpu", "--restore", str(ckpt), "--steps", "2",
                   "--save", str(tmp_path / "b"))
    assert rel(on_cpu["start_checksum"], saved["end_checksum"]) <= 1e-12
    back = next((tmp_path / "b" / "checkpoints").glob("step=2-*"))
    on_device = steps(tmp_path, "device_load", DEVICE, "--restore", str(back), "--steps", "1")
    assert rel(on_device["start_checksum"], on_cpu["end_checksum"]) <= 1e-12


def test_comm_overlap_settings_reach_megatron_ddp(tmp_path):
    plain = steps(tmp_path, "plain", DEVICE)
    overlap = steps(tmp_path, "overlap", DEVICE, "--overlap")
    assert overlap["ddp"]["overlap_grad_reduce"] and overlap["ddp"]["overlap_param_gather"]
    assert overlap["ddp"]["use_distributed_optimizer"]
    assert not plain["ddp"]["overlap_grad_reduce"]
    diffs = [rel(a, b) for a, b in zip(overlap["losses"], plain["losses"], strict=True)]
    assert max(diffs) <= 1e-5, (overlap["losses"], plain["losses"])


def test_sdpa_on_cuda_gives_the_explicit_scores_losses(tmp_path):
    auto = steps(tmp_path, "auto", DEVICE)
    flash = steps(tmp_path, "flash", DEVICE, "--attention", "flash")
    local = steps(tmp_path, "local", DEVICE, "--attention", "local")
    assert auto["uses_sdpa"] is (DEVICE == "cuda") and flash["uses_sdpa"]
    assert not local["uses_sdpa"]
    diffs = [rel(a, b) for a, b in zip(flash["losses"], local["losses"], strict=True)]
    print(f"SDPA vs explicit scores on {DEVICE}: max rel loss diff {max(diffs):.2e}")
    assert max(diffs) <= 1e-4, (flash["losses"], local["losses"])
