"""The `local` executor end to end: one process on this machine, launched by NeMo-Run."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.executors.conftest import BIN, TIMINGS, step_losses


@pytest.mark.distributed
def test_local_executor_runs_tiny_gpt_as_one_rank(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "NEMORUN_HOME": str(tmp_path / "nemorun_home"), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "nemo"), "llm", "pretrain", "--factory", "tiny_gpt", "run.executor=local",
         "trainer.devices=1", "trainer.strategy.tensor_model_parallel_size=1",
         "trainer.max_steps=10", "-y"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)
    TIMINGS.append(("local: nemo llm pretrain tiny_gpt, 1 rank, 10 steps (CLI to exit)",
                    time.monotonic() - start))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "nemo_experiments" / "default"
    assert (run_dir / "checkpoints" / "step=10-consumed_samples=80" / "nemo_lite.json").exists()
    losses = step_losses(proc.stdout)
    assert sorted(losses) == list(range(1, 11)) and losses[10] < losses[1] - 0.1, losses
