"""Run scripts of tests/distributed/scripts under torchrun on CPU ranks (gloo), and read their losses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "distributed" / "scripts"


def torchrun(nproc: int, script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--standalone", str(SCRIPTS / script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def run_layouts(nproc: int, runs: list[dict], init_dir: Path, workdir: Path) -> dict:
    spec = workdir / f"spec_{nproc}.json"
    out = workdir / f"out_{nproc}.json"
    spec.write_text(json.dumps({"init_dir": str(init_dir), "runs": runs}))
    torchrun(nproc, "parity_run.py", str(spec), str(out))
    return json.loads(out.read_text())


def run_checkpointed(nproc: int, runs: list[dict], workdir: Path, tag: str) -> None:
    """Run `ckpt_run.py` over `runs` in one torchrun launch (losses land in each run's JSONL)."""
    spec = workdir / f"spec_{tag}.json"
    spec.write_text(json.dumps({"runs": runs}))
    torchrun(nproc, "ckpt_run.py", str(spec))


def read_losses(path: Path | str) -> dict[int, float]:
    """step -> loss; a step logged twice (a killed run, then its restart) keeps the later value."""
    losses: dict[int, float] = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses[record["step"]] = record["loss"]
    return losses


def read_val_losses(path: Path | str) -> dict[int, float]:
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
