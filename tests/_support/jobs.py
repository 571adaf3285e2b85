"""Helpers of the executor and notebook tests: a git project to package, NeMo-Run's `nemo`
command, what Slurm says about a job, and the losses a run printed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def git_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    """A committed git repository at `path` (what the git packager archives)."""
    path.mkdir()
    for cmd in (["init", "-q"], ["config", "user.email", "t@example.com"],
                ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True)
    for name, text in {"README.md": "a project launched by nemo_lite\n", **(files or {})}.items():
        (path / name).write_text(text)
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-qm", "init"], check=True)
    return path


def nemo_cli(*args: str, env: dict, cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    """NeMo-Run's `nemo` command of this environment."""
    return subprocess.run([str(BIN / "nemo"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def experiment_job_dir(env: dict, title: str) -> Path:
    """The job directory of the newest experiment `title` under env's NEMORUN_HOME."""
    dirs = sorted((Path(env["NEMORUN_HOME"]) / "experiments" / title).glob(f"{title}_*/{title}"))
    assert dirs, f"no experiment directory for {title}"
    return dirs[-1]


def slurm_args(env: dict) -> list[str]:
    return [f"run.executor.account={env['NEMO_LITE_SLURM_ACCOUNT']}",
            f"run.executor.partition={env['NEMO_LITE_SLURM_PARTITION']}"]


def sacct_state(env: dict, job_id: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id], env=env,
                         capture_output=True, text=True, timeout=30).stdout.split()
    return out[-1] if out else ""


def job_ids(env: dict) -> list[str]:
    """Slurm job ids NeMo-Run submitted under this NEMORUN_HOME, oldest first."""
    path = Path(env["NEMORUN_HOME"]) / ".slurm_jobs"
    if not path.exists():
        return []
    return [line.split("=")[0].strip() for line in path.read_text().splitlines() if "=" in line]


def jobs_named(env: dict, word: str) -> list[str]:
    """Every job of the last day whose name contains `word` ("JOBID|NAME" lines)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName%200", "-a", "-S",
                          "now-1days"], env=env, capture_output=True, text=True, timeout=30,
                         check=True).stdout
    return [line for line in out.splitlines() if word in line.split("|", 1)[-1]]


def run_python(script: str, env: dict, cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    path = cwd / "launch.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def step_losses(text: str) -> dict[int, float]:
    """{step: loss} from nemo_lite's printed progress lines ("step 3/10 | loss 6.2 | ...")."""
    return {int(s): float(v) for s, v in re.findall(r"step (\d+)/\d+ \| loss ([\d.]+)", text)}




def tb_losses(run_dir: Path) -> dict[int, float]:
    """{step (from 1): reduced_train_loss} from every TensorBoard file of a run (a resumed start
    writes its own; a later file wins a step both hold): float32 values, unlike the printed 4
    decimals."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses: dict[int, float] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "reduced_train_loss" in accumulator.Tags()["scalars"]:
            losses.update({e.step + 1: e.value for e in accumulator.Scalars("reduced_train_loss")})
    return losses
