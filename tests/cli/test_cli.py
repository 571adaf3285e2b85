"""The real console scripts (`nemo`, NeMo-Run's, and `nemo-lite`) in subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
RECIPES = ["tiny_gpt", "gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"]


def cli(*args: str, cwd: Path, script: str = "nemo", timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "NEMORUN_HOME": str(cwd / ".nemo_run"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(("script", "command"),
                         [("nemo", "pretrain"), ("nemo-lite", "pretrain"), ("nemo", "import")])
def test_help_lists_the_recipes(tmp_path, script, command):
    # pretrain lists the recipes as --factory NAME; import lists each recipe's model as model=NAME
    proc = cli("llm", command, "--help", cwd=tmp_path, script=script)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for name in RECIPES:
        assert name in proc.stdout


@pytest.mark.parametrize("recipe", RECIPES)
def test_dryrun_resolves_and_plans_every_recipe(tmp_path, recipe):
    proc = cli("llm", "pretrain", "--factory", recipe, "--dryrun", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = proc.stdout[proc.stdout.index("nemo_lite launch plan:"):]
    assert re.search(r"ranks needed: \d+", plan) and "memory per rank" in plan
    assert "total" in plan
    assert not (tmp_path / "nemo_experiments").exists()  # nothing ran


def test_dryrun_of_a_finetune_recipe(tmp_path):
    proc = cli("llm", "finetune", "--factory", "llama3_8b",
               "resume.restore_config.path=/ckpt/step=100", "--dryrun", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ranks needed: 8" in proc.stdout


def test_dryrun_shows_a_batch_ramp(tmp_path):
    proc = cli("llm", "pretrain", "--factory", "tiny_gpt", "data.rampup_batch_size=[2,2,64]",
               "--dryrun", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("batch ramp: global batch 2 -> 8 by 2 over 64 samples (20 steps; micro-batches per "
            "step 1 -> 4)") in proc.stdout, proc.stdout[-2000:]


def test_to_yaml_exports_the_resolved_config(tmp_path):
    proc = cli("llm", "pretrain", "--factory", "tiny_gpt", "trainer.max_steps=7",
               "log.log_dir=runs", "trainer.strategy.pipeline_dtype=None",
               "--to-yaml", str(tmp_path / "run.yaml"), "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "run.yaml").read_text()
    assert "max_steps: 7" in text and "MegatronStrategy" in text and "log_dir: runs" in text


BAD_INPUTS = {
    "unknown recipe": (["--factory", "tiny_gp"], "Did you mean 'tiny_gpt'"),
    "unknown key": (["--factory", "tiny_gpt", "trainer.max_stepz=3"],
                    "unknown override key 'trainer.max_stepz'. Did you mean max_steps"),
    "wrong type": (["--factory", "tiny_gpt", "trainer.max_steps=abc"],
                   "'abc' is not a valid int"),
    "impossible layout": (["--factory", "tiny_gpt", "trainer.strategy.tensor_model_parallel_size=4"],
                          "world size 2 is not divisible by tensor (4)"),
    "batch math": (["--factory", "tiny_gpt", "data.global_batch_size=5"],
                   "global_batch_size"),
    "ramp that does not split": (["--factory", "tiny_gpt", "data.rampup_batch_size=[2,3,16]"],
                                 "reaches a global batch of 5, which micro_batch_size (2) x data "
                                 "parallel size (1) = 2 does not divide"),
    "recompute megatron rejects": (["--factory", "tiny_gpt",
                                    "model.config.recompute_granularity=full"],
                                   'recompute_method must be "block" or "uniform"'),
    "executor world size": (["--factory", "tiny_gpt", "run.executor=local"],
                            "the executor starts 1 processes"),
    "override under a None field": (["--factory", "tiny_gpt", "resume.restore_config.path=/x"],
                                    "'resume.restore_config' is None in this recipe. Create it "
                                    "first, then set its fields: resume.restore_config=Config["
                                    "nemo_lite.lightning.resume.RestoreConfig]"),
    "restore path not a checkpoint": (["--factory", "tiny_gpt",
                                       "resume.restore_config=Config[nemo_lite.lightning.resume.RestoreConfig]",
                                       "resume.restore_config.path=/"],
                                      "resume.restore_config.path: checkpoint / is incomplete or "
                                      "not a nemo_lite checkpoint"),
    "ddp vs per-token loss": (["--factory", "llama3_8b",
                               "trainer.strategy.ddp.average_in_collective=True"],
                              "average_in_collective=True) cannot be combined with the model's "
                              "calculate_per_token_loss=True"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(tmp_path, case):
    args, words = BAD_INPUTS[case]
    proc = cli("llm", "pretrain", *args, "-y", cwd=tmp_path)  # no --dryrun: it would launch
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and words in lines[-1], proc.stderr[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "nemo_experiments").exists()


@pytest.mark.parametrize("args,words", [
    (["--factory", "llama3_8b", "peft.dim=6", "trainer.strategy.tensor_model_parallel_size=4"],
     "LoRA(dim=6) must be divisible by the tensor-parallel size 4"),
    (["--factory", "mixtral_8x7b(peft_scheme='dora')", "model.config.moe_grouped_gemm=True"],
     "DoRA on MoE experts with moe_grouped_gemm=True"),
    (["--factory", "mixtral_8x7b", "trainer.strategy.expert_tensor_parallel_size=2",
      "trainer.strategy.expert_model_parallel_size=4",
      "trainer.strategy.tensor_model_parallel_size=2", "trainer.strategy.sequence_parallel=True"],
     "LoRA on MoE experts with expert_tensor_parallel_size=2"),
])
def test_peft_settings_the_layout_cannot_take_fail_before_launch(tmp_path, args, words):
    proc = cli("llm", "finetune", *args, "resume.restore_config.path=/ckpt/step=100", "--dryrun",
               "-y", cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and lines and words in lines[-1], proc.stderr[-3000:]


@pytest.mark.distributed
def test_tiny_gpt_trains_for_ten_steps_on_two_cpu_ranks(tmp_path):
    proc = cli("llm", "pretrain", "--factory", "tiny_gpt", "trainer.max_steps=10", "-y",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "recipe       tiny_gpt" in proc.stdout  # the summary names the --factory
    run_dir = tmp_path / "nemo_experiments" / "default"
    checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "step=10-consumed_samples=80" in checkpoints, checkpoints
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb_logs"))
    events.Reload()
    losses = [e.value for e in events.Scalars("reduced_train_loss")]
    assert len(losses) == 10 and losses[-1] < losses[0] - 0.1, losses
    assert (run_dir / "nemo_log_globalrank-1_localrank-1.txt").exists()  # two ranks ran


def test_factory_arguments_and_the_validate_entrypoint(tmp_path):
    proc = cli("llm", "validate", "--factory", "tiny_gpt(name='val', devices=2)", "--dryrun", "-y",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nemo_lite.llm.api:validate" in proc.stdout and "name='val'" in proc.stdout


@pytest.mark.distributed
def test_torchrun_executor_launches_the_recipe_on_two_ranks(tmp_path):
    proc = cli("llm", "pretrain", "--factory", "tiny_gpt", "run.executor=torchrun",
               "run.executor.ntasks_per_node=2", "trainer.max_steps=4", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = tmp_path / "nemo_experiments" / "default"
    assert (run_dir / "checkpoints" / "step=4-consumed_samples=32" / "nemo_lite.json").exists()
    assert (run_dir / "nemo_log_globalrank-1_localrank-1.txt").exists()
    assert "recipe       tiny_gpt" in proc.stdout + proc.stderr  # the task carries the name
