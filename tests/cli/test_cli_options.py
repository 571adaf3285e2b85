"""Every option `nemo llm pretrain --help` shows either works with nemo_lite or is refused.

--name, --repl, --verbose and --tail-logs (a warning: logs are always shown) work; --load and
--detach without an executor are refused in one line, exit 2, before anything runs.
(--dryrun, --factory, --yaml, --to-* and -y are covered in test_cli.py / test_task_files.py.)
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.cli.test_cli import BIN, cli

ONE_RANK = ["--factory", "tiny_gpt", "trainer.max_steps=1", "trainer.devices=1",
            "trainer.strategy.tensor_model_parallel_size=1", "log.log_dir=runs"]


@pytest.mark.parametrize("option,words", [
    (["--load", "somewhere"], ["--load somewhere", "--yaml FILE"]),
    (["--detach"], ["--detach", "run.executor="]),
])
def test_options_without_meaning_here_are_refused(tmp_path, option, words):
    proc = cli("llm", "pretrain", *ONE_RANK, *option, "-y", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert all(w in lines[0] for w in words), lines
    assert not (tmp_path / "runs").exists()


def test_verbose_shows_the_traceback_before_the_line(tmp_path):
    proc = cli("llm", "pretrain", *ONE_RANK, "trainer.max_stepz=1", "--verbose", "-y",
               cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown override key")


@pytest.mark.distributed
def test_name_names_the_run_directory_and_tail_logs_warns(tmp_path):
    proc = cli("llm", "pretrain", *ONE_RANK, "--name", "my_run", "--tail-logs", "-y",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs" / "my_run" / "checkpoints").is_dir()
    assert (proc.stdout + proc.stderr).count("--tail-logs: nemo_lite always shows") == 1


@pytest.mark.distributed
def test_repl_edits_the_task_then_runs_it(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "NEMORUN_HOME": str(tmp_path / ".nemo_run"), "OMP_NUM_THREADS": "1"}
    commands = "task.trainer.max_steps = 2\nrun_task()\nexit\n"
    proc = subprocess.run([str(BIN / "nemo"), "llm", "pretrain", *ONE_RANK, "--repl", "-y"],
                          input=commands, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.findall(r"step (\d+/\d+) \| loss", proc.stdout) == ["1/2", "2/2"], proc.stdout[-2000:]
