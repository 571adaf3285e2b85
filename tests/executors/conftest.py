"""A real one-node Slurm cluster for the executor tests (tests/infra/slurm/start.sh), and helpers.

The cluster starts once per session (installing Slurm with apt-get when missing: needs root) and
stops at the end, unless it was already running before the session (then it is left running).
Set NEMO_LITE_SKIP_SLURM=1 to skip the Slurm tests; without root and without Slurm they skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "tests" / "infra" / "slurm"
BIN = Path(sys.executable).parent
TIMINGS: list[tuple[str, float]] = []


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("executor wall times")
        for what, seconds in TIMINGS:
            terminalreporter.write_line(f"{seconds:6.1f} s  {what}")


@pytest.fixture(scope="session")
def slurm_cluster():
    """The environment of the running test cluster (SLURM_CONF, NEMO_LITE_SLURM_ACCOUNT, ...)."""
    if os.environ.get("NEMO_LITE_SKIP_SLURM") == "1":
        pytest.skip("NEMO_LITE_SKIP_SLURM=1")
    have_slurm = all(shutil.which(c) for c in ("slurmctld", "slurmd", "slurmdbd", "sbatch"))
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster needs root (SlurmUser=root)")
    if not have_slurm and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and apt-get is not available")
    directory = os.environ.get("NEMO_LITE_SLURM_DIR", "/tmp/nemo_lite_slurm")
    start = time.monotonic()
    proc = subprocess.run(["bash", str(INFRA / "start.sh"), directory], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"tests/infra/slurm/start.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    TIMINGS.append(("start the Slurm test cluster" + ("" if have_slurm else " (with install)"),
                    time.monotonic() - start))
    env = dict(re.findall(r"^export (\w+)=(.*)$", proc.stdout, flags=re.M))
    reused = "already running" in proc.stderr
    yield env
    if not reused:
        subprocess.run(["bash", str(INFRA / "stop.sh"), directory], capture_output=True,
                       timeout=120)


@pytest.fixture
def job_env(slurm_cluster, tmp_path):
    """Environment for a submitting process: the cluster's, this venv first on PATH, and a
    NEMORUN_HOME of the test's own."""
    home = tmp_path / "nemorun_home"
    return {**os.environ, **slurm_cluster, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "NEMORUN_HOME": str(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


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


def all_job_count(env: dict) -> int:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "-a", "-S", "now-1days"],
                         env=env, capture_output=True, text=True, timeout=30).stdout
    return len(out.split())


def run_python(script: str, env: dict, cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    path = cwd / "launch.py"
    path.write_text(script)
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def step_losses(text: str) -> dict[int, float]:
    """{step: loss} from nemo_lite's printed progress lines ("step 3/10 | loss 6.2 | ...")."""
    return {int(s): float(v) for s, v in re.findall(r"step (\d+)/\d+ \| loss ([\d.]+)", text)}


DOCKER_INFRA = ROOT / "tests" / "infra" / "docker"


@pytest.fixture(scope="session")
def docker_engine():
    """{"DOCKER_HOST": ..., "image": ...}: a private dockerd (tests/infra/docker/start.sh) and the
    test image built without a registry (build_image.sh; cached by content in the engine).
    Set NEMO_LITE_SKIP_DOCKER=1 to skip; without root and without Docker they skip."""
    if os.environ.get("NEMO_LITE_SKIP_DOCKER") == "1":
        pytest.skip("NEMO_LITE_SKIP_DOCKER=1")
    if os.geteuid() != 0:
        pytest.skip("the test Docker engine needs root")
    have = all(shutil.which(c) for c in ("dockerd", "docker", "debootstrap"))
    if not have and not shutil.which("apt-get"):
        pytest.skip("Docker is not installed and apt-get is not available")
    directory = os.environ.get("NEMO_LITE_DOCKER_DIR", "/tmp/nemo_lite_docker")
    start = time.monotonic()
    proc = subprocess.run(["bash", str(DOCKER_INFRA / "start.sh"), directory],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"tests/infra/docker/start.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    TIMINGS.append(("start dockerd" + ("" if have else " (with install)"), time.monotonic() - start))
    env = dict(re.findall(r"^export (\w+)=(.*)$", proc.stdout, flags=re.M))
    reused = "already running" in proc.stderr
    start = time.monotonic()
    build = subprocess.run(["bash", str(DOCKER_INFRA / "build_image.sh")],
                           env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=1200)
    if build.returncode != 0:
        if not reused:
            subprocess.run(["bash", str(DOCKER_INFRA / "stop.sh"), directory], timeout=120)
        pytest.fail(f"tests/infra/docker/build_image.sh failed:\n{build.stderr[-4000:]}")
    built = "built in" in build.stderr or "wheel ->" in build.stderr
    TIMINGS.append((f"test image {build.stdout.strip()} ({'built' if built else 'cached'})",
                    time.monotonic() - start))
    yield {**env, "image": build.stdout.strip()}
    if not reused:
        subprocess.run(["bash", str(DOCKER_INFRA / "stop.sh"), directory], capture_output=True,
                       timeout=120)


@pytest.fixture
def docker_env(docker_engine, tmp_path):
    """Environment for a launching process: the engine's DOCKER_HOST, this venv first on PATH,
    a NEMORUN_HOME of the test's own."""
    return {**os.environ, "DOCKER_HOST": docker_engine["DOCKER_HOST"],
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "NEMORUN_HOME": str(tmp_path / "nemorun_home"), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}
