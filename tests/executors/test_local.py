"""The `local` executor end to end: one process on this machine, launched by NeMo-Run."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tests._support.jobs import BIN, step_losses
from tests._support.wall_times import record as record_wall_time


@pytest.mark.distributed
def test_local_executor_runs_tiny_gpt_as_one_rank(tmp_path, record_property):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "NEMORUN_HOME": str(tmp_path / "nemorun_home"), "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "nemo"), "llm", "pretrain", "--factory", "tiny_gpt", "run.executor=local",
         "trainer.devices=1", "trainer.strategy.tensor_model_parallel_size=1",
         "trainer.max_steps=10", "-y"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)
    record_wall_time(record_property, "local: nemo llm pretrain tiny_gpt, 1 rank, 10 steps (CLI to exit)",
                    time.monotonic() - start)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "nemo_experiments" / "default"
    assert (run_dir / "checkpoints" / "step=10-consumed_samples=80" / "nemo_lite.json").exists()
    losses = step_losses(proc.stdout)
    assert sorted(losses) == list(range(1, 11)) and losses[10] < losses[1] - 0.1, losses


EXPERIMENT = r"""
import sys
import fiddle as fdl
import nemo_run as run
import executors
from nemo_lite import lightning as nl
from nemo_lite.llm import api
from recipes import tiny_gpt

if __name__ == "__main__":
    work = sys.argv[1]
    pretrain = tiny_gpt.pretrain_recipe(name="exp", dir=work, devices=2)
    pretrain.trainer.max_steps = 12
    validate = pretrain.clone()
    fdl.update_callable(validate, api.validate)
    validate.trainer.limit_val_batches = 2
    validate.resume = run.Config(nl.AutoResume, restore_config=run.Config(
        nl.RestoreConfig, path=f"{work}/exp/checkpoints/last"))
    tasks = {"pretrain": pretrain, "validate": validate}
    if sys.argv[2] == "fail":
        tasks["fails"] = run.Script(inline="echo about to fail; exit 3")
    try:
        results = executors.run_experiment(tasks, executors.torchrun(ntasks_per_node=2),
                                           title="pretrain then validate")
    except executors.JobFailed as failure:
        print("JOBFAILED", failure.result.name, failure.result.state)
        sys.exit(1)
    print("RESULTS", [(r.name, r.state) for r in results])
"""


@pytest.mark.distributed
def test_an_experiment_pretrains_then_validates_and_fails_when_a_task_fails(tmp_path,
                                                                            record_property):
    """run_experiment: tasks run one after the other in one NeMo-Run experiment; validation
    loads the pretraining checkpoint (its loss is the trained model's); a failing task makes
    the launcher exit non-zero, naming it."""
    env = {**os.environ, "NEMORUN_HOME": str(tmp_path / "nemorun_home"), "OMP_NUM_THREADS": "1"}
    (tmp_path / "launch.py").write_text(EXPERIMENT)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "python"), "launch.py", str(tmp_path / "runs"), "ok"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    record_wall_time(record_property, "torchrun: experiment pretrain 12 steps + validate, 2 ranks",
                    time.monotonic() - start)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "RESULTS [('pretrain', 'SUCCEEDED'), ('validate', 'SUCCEEDED')]" in proc.stdout
    losses = step_losses(out)
    assert sorted(losses) == list(range(1, 13)), losses
    val = [float(v) for v in re.findall(r"validation at step \d+ \| val_loss ([\d.]+)", out)]
    assert len(val) == 1 and val[0] < losses[1] - 0.3, (val, losses)  # trained weights, not new
    assert out.index("step 12/12") < out.index("validation at step")  # one after the other

    proc = subprocess.run([str(BIN / "python"), "launch.py", str(tmp_path / "again"), "fail"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 1, (proc.stdout + proc.stderr)[-4000:]
    assert "JOBFAILED fails FAILED" in proc.stdout
