"""scripts/device_check.sh --cpu: the GPU machine's one command, proven here on CPU (tiny
shapes) before any device time is spent. Every step must pass, the GPU tests must run (not
skip), and the benchmark must write its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.distributed  # several training processes


def test_device_check_runs_every_step_on_cpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PY": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device_check.sh"), "--cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    failed = [line for line in proc.stdout.splitlines() if line.startswith("== ") and
              "rc=0" not in line and "(limit" not in line]
    if proc.returncode != 0:  # printed whole (pytest shortens an assertion's message)
        errors = [line for line in proc.stdout.splitlines() if "Error" in line][-20:]
        print("\n".join([*failed, *errors, proc.stdout[-6000:], proc.stderr[-2000:]]))
    assert proc.returncode == 0, failed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "device_check.log", "figures.json", "gpu_tests.xml", "throughput_128.json",
        "throughput_64.json"]
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert [s["step"] for s in figures["steps"]] == [
        "versions", "gpu_tests", "throughput_64", "throughput_128"]
    assert all(s["rc"] == 0 for s in figures["steps"]), figures["steps"]
    assert figures["versions"]["mode"] == "cpu" and figures["versions"]["megatron.core"]
    suite = ET.parse(tmp_path / "gpu_tests.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) == 5 and int(suite.get("skipped")) == 0, suite.attrib
    assert int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0, suite.attrib
    for name, result in figures["throughput"].items():
        assert result["tokens_per_s_per_gpu"] > 0 and result["measured_peak_tflops"] > 0, name
        assert result["memory_estimate_gib"] > 0 and len(result["losses"]) == 3, name
