"""The real test daemons for 03_launching.ipynb: the executor tests' session fixtures (a one-node
Slurm cluster, a private dockerd and its image), re-exported here. Each skips where it cannot
run (no root, NEMO_LITE_SKIP_SLURM=1 / NEMO_LITE_SKIP_DOCKER=1, ...): the notebook's Slurm and
Docker cells then say so and the test checks that they did."""

from __future__ import annotations

from tests.executors.conftest import docker_engine, slurm_cluster  # noqa: F401

NOTEBOOK_TIMES: list[tuple[str, float]] = []


def pytest_terminal_summary(terminalreporter):
    if NOTEBOOK_TIMES:
        terminalreporter.section("notebook execution times")
        for what, seconds in NOTEBOOK_TIMES:
            terminalreporter.write_line(f"{seconds:6.1f} s  {what}")
