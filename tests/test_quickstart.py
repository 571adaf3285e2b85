"""The README's main job runs and its loss goes down; imports stay light."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_pretraining_with_tp2_on_two_ranks_lowers_the_loss():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pretrain_tiny.py"), "--steps", "12"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    losses = [float(x) for x in re.findall(r"^step\s+\d+\s+loss (\S+)", proc.stdout, re.M)]
    assert len(losses) == 12, proc.stdout
    assert losses[-1] < losses[0] - 0.3


def test_import_does_not_load_lightning_or_megatron():
    code = (
        "import sys, nemo_lite\n"
        "from nemo_lite import lightning as nl, llm\n"
        "heavy = [m for m in ('torch', 'lightning', 'megatron.core') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
