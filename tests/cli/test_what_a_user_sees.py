"""What a user sees during and after a run: the start-of-run summary, the per-step metrics on
the progress line and in TensorBoard, and `nemo-lite plot RUN_DIR`. One real CPU run (tiny_gpt
on 1 rank, validation every 2 steps) feeds every check."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

SCRIPT = r"""
import json, sys
import fiddle as fdl
from recipes import tiny_gpt

if __name__ == "__main__":
    out = sys.argv[1]
    recipe = tiny_gpt.pretrain_recipe(name="seen", dir=out, devices=1)
    recipe.trainer.recipe = "tiny_gpt"  # what `--factory tiny_gpt` sets
    recipe.trainer.strategy.tensor_model_parallel_size = 1
    recipe.trainer.max_steps = 6
    recipe.trainer.val_check_interval = 2
    recipe.trainer.limit_val_batches = 2
    task = fdl.build(recipe)
    model, trainer = task.keywords["model"], task.keywords["trainer"]
    task()
    from nemo_lite.llm import count_parameters
    from nemo_lite.llm.gpt.memory import estimate_memory

    summary = model.run_summary
    strategy = trainer.strategy
    expected_memory = estimate_memory(
        model.config, precision="32", micro_batch_size=strategy.micro_batch_size,
        num_microbatches=strategy.num_microbatches, vocab_size=model.tokenizer.vocab_size,
        flash_attention=False).total / 1024**3
    json.dump({
        "summary": summary.__dict__,
        "numel": sum(p.numel() for chunk in model.module for p in chunk.parameters()),
        "analytic": count_parameters(model.config, model.tokenizer.vocab_size, pad_vocab=True),
        "expected_memory_gib": expected_memory,
        "run_dir": str(trainer.default_root_dir),
    }, open(f"{out}/facts.json", "w"))
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("seen")
    (work / "run.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(work / "run.py"), str(work)], capture_output=True,
                          text=True, timeout=300, env={"PATH": str(BIN), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    facts = json.loads((work / "facts.json").read_text())
    facts["stderr"] = proc.stderr
    return proc.stdout, facts


def test_the_run_summary_matches_the_model(finished_run):
    stdout, facts = finished_run
    summary = facts["summary"]
    assert summary["recipe"] == "tiny_gpt" and summary["world_size"] == 1
    assert summary["parameters_per_rank"] == [facts["numel"]]  # what the rank holds
    assert summary["total_parameters"] == facts["analytic"] == facts["numel"]  # one rank: all
    assert summary["memory_per_rank_gib"] == pytest.approx(facts["expected_memory_gib"])
    assert summary["run_dir"] == facts["run_dir"]
    assert (summary["global_batch_size"], summary["micro_batch_size"],
            summary["num_microbatches"]) == (8, 2, 4)
    printed = stdout[stdout.index("recipe "):]
    assert f"parameters   {facts['numel']:,} in total; per rank: {facts['numel']:,}" in printed
    assert "ranks        1 on cpu (gloo): TP 1 x PP 1 x CP 1 x DP 1" in printed
    assert stdout.index("recipe ") < stdout.index("step 1/6")  # before the first step


def test_the_start_shows_no_library_chatter(finished_run):
    stdout, facts = finished_run
    output = stdout + facts["stderr"]
    for noise in ("Total FLOPs", "GPU available:", "💡 Tip", "dataloader_iter",
                  "CUDA_DEVICE_MAX_CONNECTIONS", "full scope is deprecated"):
        assert noise not in output, noise


def test_progress_lines_and_tensorboard_carry_the_step_metrics(finished_run):
    stdout, facts = finished_run
    lines = re.findall(r"^step (\d)/6 \| loss [\d.]+ \| lr \S+ \| grad_norm [\d.]+ \| "
                       r"consumed_samples \d+ \| (\d+) tokens/s \| (\d+) ms/step"
                       r"( \| \+\d+ ms between steps \(checkpoint, validation\))?$", stdout, re.M)
    assert [int(s) for s, _, _, _ in lines] == [1, 2, 3, 4, 5, 6], stdout[-3000:]
    for _, tokens, ms, _ in lines:  # 8 x 64 tokens per step: the two numbers agree
        assert int(tokens) * int(ms) / 1000 == pytest.approx(8 * 64, rel=0.02), (tokens, ms)
    assert re.search(r"^validation at step 2 \| val_loss [\d.]+$", stdout, re.M)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = Path(facts["run_dir"]).rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    expected = {"reduced_train_loss", "val_loss", "lr", "grad_norm", "step_time",
                "tokens_per_sec", "tokens_per_sec_per_rank", "memory_gib"}
    assert expected <= tags, tags
    step_times = {e.step: e.value for e in accumulator.Scalars("step_time")}
    tokens = {e.step: e.value for e in accumulator.Scalars("tokens_per_sec")}
    assert len(step_times) == 6
    for step, seconds in step_times.items():
        assert tokens[step] == pytest.approx(8 * 64 / seconds, rel=1e-4)
    assert all(e.value > 0.05 for e in accumulator.Scalars("memory_gib"))  # RSS of a torch process


def test_plot_writes_a_png_of_both_curves(finished_run, tmp_path):
    _, facts = finished_run
    run_dir = Path(facts["run_dir"]).parent  # the run's directory above its version: all found
    out = tmp_path / "curves.png"
    proc = subprocess.run([str(BIN / "nemo-lite"), "plot", str(run_dir), "-o", str(out),
                           "--width", "6", "--height", "4", "--dpi", "50"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"train loss [\d.]+ \(step 1\) -> [\d.]+ \(step 6\); validation loss", proc.stdout)
    from PIL import Image

    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (300, 200)
        assert len(set(image.convert("L").getdata())) > 10  # drawn, not blank

    from nemo_lite.cli.plot import plot_run, read_scalars

    scalars = read_scalars(run_dir)
    assert [s for s, _ in scalars["reduced_train_loss"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in scalars["val_loss"]] == [2, 4, 6]
    _, figure = plot_run(run_dir, tmp_path / "again.png")
    (axes,) = figure.axes
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("step", "loss")
    assert [line.get_label() for line in axes.get_lines()] == ["train loss", "validation loss"]
    assert list(axes.get_lines()[1].get_xdata()) == [2, 4, 6]


def test_plot_explains_a_directory_without_events(tmp_path):
    proc = subprocess.run([str(BIN / "nemo-lite"), "plot", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "no TensorBoard event files under" in proc.stderr
