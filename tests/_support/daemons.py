"""The real daemons of the executor and notebook tests (a pytest plugin, ./conftest.py): a
one-node Slurm cluster (tests/infra/slurm/start.sh) and a private dockerd with the test image.

The cluster starts once per session (installing Slurm with apt-get when missing: needs root) and
stops at the end, unless it was already running before the session (then it is left running).
Set NEMO_LITE_SKIP_SLURM=1 to skip the Slurm tests; without root and without Slurm they skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from tests._support.jobs import BIN, ROOT
from tests._support.wall_times import PENDING, flush_pending, line

INFRA = ROOT / "tests" / "infra" / "slurm"


def _slurm_cluster(nodes: int, directory: str):
    """Start the test cluster of `nodes` nodes in `directory`, yield its environment, stop it."""
    if os.environ.get("NEMO_LITE_SKIP_SLURM") == "1":
        pytest.skip("NEMO_LITE_SKIP_SLURM=1")
    have_slurm = all(shutil.which(c) for c in ("slurmctld", "slurmd", "slurmdbd", "sbatch"))
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster needs root (SlurmUser=root)")
    if not have_slurm and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and apt-get is not available")
    start = time.monotonic()
    proc = subprocess.run(["bash", str(INFRA / "start.sh"), directory], capture_output=True,
                          text=True, timeout=900,
                          env={**os.environ, "NEMO_LITE_SLURM_NODES": str(nodes)})
    if proc.returncode != 0:
        pytest.fail(f"tests/infra/slurm/start.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    PENDING.append(line(f"start the {nodes}-node Slurm test cluster"
                        + ("" if have_slurm else " (with install)"), time.monotonic() - start))
    env = dict(re.findall(r"^export (\w+)=(.*)$", proc.stdout, flags=re.M))
    reused = "already running" in proc.stderr
    yield env
    if not reused:
        start = time.monotonic()
        subprocess.run(["bash", str(INFRA / "stop.sh"), directory], capture_output=True,
                       timeout=120)
        print(f"stopped the {nodes}-node Slurm test cluster in {time.monotonic() - start:.1f} s")


@pytest.fixture(scope="session")
def slurm_cluster():
    """The environment of the running one-node test cluster (SLURM_CONF,
    NEMO_LITE_SLURM_ACCOUNT, ...)."""
    yield from _slurm_cluster(1, os.environ.get("NEMO_LITE_SLURM_DIR", "/tmp/nemo_lite_slurm"))


@pytest.fixture(scope="session")
def slurm_two_nodes():
    """The two-node test cluster (each slurmd in its own network namespace): its environment,
    with NEMO_LITE_SLURM_BIN, the directory of Slurm's commands that reach it."""
    yield from _slurm_cluster(2, os.environ.get("NEMO_LITE_SLURM2_DIR", "/tmp/nemo_lite_slurm2"))


@pytest.fixture
def job_env(slurm_cluster, tmp_path, record_property):
    """Environment for a submitting process: the cluster's, this venv first on PATH, and a
    NEMORUN_HOME of the test's own."""
    flush_pending(record_property)  # the cluster's start, reported by its first test
    home = tmp_path / "nemorun_home"
    return _job_env(slurm_cluster, home)


@pytest.fixture
def job_env_two_nodes(slurm_two_nodes, tmp_path, record_property):
    """job_env for the two-node cluster: its Slurm commands first on PATH."""
    flush_pending(record_property)
    return _job_env(slurm_two_nodes, tmp_path / "nemorun_home")


def _job_env(cluster: dict, home) -> dict:
    path = os.pathsep.join(p for p in (cluster.get("NEMO_LITE_SLURM_BIN"), str(BIN),
                                       os.environ["PATH"]) if p)
    return {**os.environ, **cluster, "PATH": path, "NEMORUN_HOME": str(home),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


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
    PENDING.append(line("start dockerd" + ("" if have else " (with install)"), time.monotonic() - start))
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
    PENDING.append(line(f"test image {build.stdout.strip()} ({'built' if built else 'cached'})",
                    time.monotonic() - start))
    yield {**env, "image": build.stdout.strip()}
    if not reused:
        subprocess.run(["bash", str(DOCKER_INFRA / "stop.sh"), directory], capture_output=True,
                       timeout=120)


@pytest.fixture
def docker_env(docker_engine, tmp_path, record_property):
    """Environment for a launching process: the engine's DOCKER_HOST, this venv first on PATH,
    a NEMORUN_HOME of the test's own."""
    flush_pending(record_property)  # dockerd's start and the image build, with its first test
    return {**os.environ, "DOCKER_HOST": docker_engine["DOCKER_HOST"],
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "NEMORUN_HOME": str(tmp_path / "nemorun_home"), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}
