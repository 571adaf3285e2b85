"""NeMo 2.0 scripts, written as NeMo's documentation writes them, run after changing imports.

Each script in tests/migration/scripts is a NeMo doc example with only `from nemo ...` imports
replaced by `from nemo_lite ...`, accelerator "cpu" and smaller sizes (marked in the script).
Each runs as a user would run it (`python script.py` in a fresh directory, the virtual
environment first on PATH, NeMo-Run's home in that directory); the tests check that it exits 0,
that the run directory, checkpoints and logs are where the doc says, and that it trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"


def run_script(name: str, cwd: Path, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NEMORUN_HOME": str(cwd / "nemo_run_home"),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("NEMO_LITE_RUN_VERSION", None)
    env.pop("NEMO_LITE_LOG_DIR", None)
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


def scalars(tb_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def assert_checkpoint(path: Path, step: int, consumed: int) -> None:
    """A complete nemo_lite checkpoint of `step`: weights, context (Fiddle JSON), manifest."""
    assert path.is_dir(), f"missing checkpoint {path}; have {sorted(p.name for p in path.parent.iterdir())}"
    assert (path / "weights" / "metadata.json").is_file()
    context = json.loads((path / "context" / "io.json").read_text())
    assert context, "empty context/io.json"
    manifest = json.loads((path / "nemo_lite.json").read_text())
    assert (manifest["step"], manifest["consumed_samples"]) == (step, consumed)


@pytest.mark.distributed
def test_nemo2_api_quickstart(tmp_path: Path) -> None:
    """The "Quickstart" of NeMo 2.0's docs (llm.train with MockDataModule, GPTConfig,
    MegatronStrategy(pipeline_dtype=...), bf16-mixed, OptimizerConfig + MegatronOptimizerModule,
    NeMoLogger(log_dir="test_logdir")), on 2 CPU ranks started by Lightning."""
    run_script("nemo2_api_quickstart.py", tmp_path)
    # "logs and checkpoints will be written here": test_logdir/<name>/<datetime version>/
    versions = list((tmp_path / "test_logdir" / "default").iterdir())
    assert len(versions) == 1, versions
    run_dir = versions[0]
    assert (run_dir / "tb_logs").is_dir() and (run_dir / "cmd-args.log").is_file()
    for rank in (0, 1):
        assert (run_dir / f"nemo_log_globalrank-{rank}_localrank-{rank}.txt").is_file()
    # 6 optimizer steps of global batch 16: the final checkpoint says so
    final = run_dir / "checkpoints" / "step=6-consumed_samples=96"
    assert_checkpoint(final, step=6, consumed=96)
    assert (run_dir / "checkpoints" / "last").resolve() == final.resolve()


@pytest.mark.distributed
def test_nemo_run_quickstart(tmp_path: Path) -> None:
    """NeMo's "Quickstart with NeMo-Run": a recipe from `llm.<name>.pretrain_recipe(...)`,
    edited as a Config, run by `run.run(recipe, executor=run.LocalExecutor(ntasks_per_node=2,
    launcher="torchrun"))`."""
    proc = run_script("nemo_run_quickstart.py", tmp_path)
    # the Llama 3 8B recipe was built and edited as the doc edits it (not run on CPU)
    assert "llama3_8b recipe: 8 layers, CP 1, 8 devices x 1 nodes" in proc.stdout
    # NeMo-Run exits 0 even when a job fails: check its own record of the job
    experiments = tmp_path / "nemo_run_home" / "experiments" / "tiny_gpt_pretraining"
    assert list(experiments.glob("*/tiny_gpt_pretraining/nemo_run/*/SUCCESS")), proc.stdout[-3000:]
    # checkpoints and logs under the recipe's dir / name
    run_dir = tmp_path / "checkpoints" / "tiny_gpt"
    assert_checkpoint(run_dir / "checkpoints" / "step=5-consumed_samples=40", step=5, consumed=40)
    losses = scalars(run_dir / "tb_logs", "reduced_train_loss")
    assert sorted(losses) == [0, 1, 2, 3, 4]
    assert losses[4] < losses[0] - 0.1, losses


def test_nemo2_migration_guide(tmp_path: Path) -> None:
    """The migration guide's pieces: Trainer arguments, OptimizerConfig(use_distributed_optimizer)
    with nl.lr_scheduler.CosineAnnealingScheduler, nl.ModelCheckpoint(monitor="val_loss",
    always_save_context=...), NeMoLogger + AutoResume, llm.pretrain, then llm.finetune from the
    pretraining checkpoint with nl.RestoreConfig."""
    run_script("nemo2_migration_guide.py", tmp_path, str(tmp_path))
    root = tmp_path / "my_logging_dir"
    ckpts = root / "experiment1" / "checkpoints"  # use_datetime_version=False: no version dir
    names = sorted(p.name for p in ckpts.iterdir())
    assert "last" in names and len(names) == 3, names  # save_top_k=2 + last
    step8 = next(p for p in ckpts.iterdir() if "step=8-consumed_samples=64" in p.name)
    assert step8.name.startswith("val_loss=")
    assert_checkpoint(step8, step=8, consumed=64)
    pretrain_losses = scalars(root / "experiment1" / "tb_logs", "reduced_train_loss")
    assert sorted(pretrain_losses) == list(range(8))
    assert pretrain_losses[7] < pretrain_losses[0] - 0.2, pretrain_losses
    assert sorted(scalars(root / "experiment1" / "tb_logs", "val_loss")) == [3, 7]
    # fine-tuning started from the pretrained weights (RestoreConfig), with a fresh step count
    assert_checkpoint(root / "sft" / "checkpoints" / "step=2-consumed_samples=16", step=2, consumed=16)
    sft_losses = scalars(root / "sft" / "tb_logs", "reduced_train_loss")
    assert sft_losses[0] < pretrain_losses[0] - 0.2, (sft_losses, pretrain_losses)
