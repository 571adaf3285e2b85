"""Suite-wide settings: one thread per rank (the CPU tests run several ranks on 2 cores) and
how `pytest -n 2` (pytest-xdist) shares the tests between its two workers.

Each test file is one unit of work, so its module fixtures (a trained parity run, a converted
model) are built once, on one worker. The files that use the session's real daemons (the Slurm
test cluster, the private dockerd) form one unit, so those daemons start once and no two jobs
race for them. The longest units start first, so the last ones to start are short."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

NVTE_ATTENTION = ("NVTE_FLASH_ATTN", "NVTE_FUSED_ATTN", "NVTE_UNFUSED_ATTN")
_USER_NVTE = {name: os.environ.get(name) for name in NVTE_ATTENTION}  # before any model


@pytest.fixture(autouse=True)
def _megatron_attention_variables_stay_in_their_test():
    """megatron's LanguageModule writes the model's attention backend into these process-wide
    variables and asserts that later models agree. A model built in this process must not
    hand its values to a later test's subprocesses (they failed a flash-attention GPU test run
    on the CPU with "NVTE_FLASH_ATTN set to 1, but expected 0")."""
    yield
    for name, value in _USER_NVTE.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


WALL_TIMES: list[str] = []  # tests/_support/wall_times.py, gathered here from every worker


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":  # the last report of a test carries all it recorded
        from tests._support.wall_times import KEY

        WALL_TIMES.extend(str(value) for name, value in report.user_properties if name == KEY)


def pytest_terminal_summary(terminalreporter) -> None:
    if WALL_TIMES:
        terminalreporter.section("wall times (jobs, notebooks, test daemons)")
        for entry in WALL_TIMES:
            terminalreporter.write_line(entry)


DAEMONS = "daemons"
DAEMON_FILES = ("tests/executors/test_slurm.py", "tests/executors/test_docker.py",
                "tests/notebooks/test_notebooks.py")
# the longest units measured on 2 cores (`--durations`), longest first; the other files follow,
# those with more tests first (xdist's order)
LONGEST_FIRST = (DAEMONS, "tests/executors/test_slurm_two_nodes.py",
                 "tests/distributed/test_checkpoint_reshard.py",
                 "tests/distributed/test_parity.py", "tests/distributed/test_resume.py",
                 "tests/inference/test_generate.py", "tests/unit/test_device_check.py",
                 "tests/executors/test_local.py", "tests/cli/test_task_files.py",
                 "tests/recipes/test_tiny_gpt_end_to_end.py", "tests/distributed/test_hangs.py",
                 "tests/hf/test_hf_checkpoints.py", "tests/distributed/test_lora.py",
                 "tests/cli/test_cli.py", "tests/recipes/test_recipes_train.py",
                 "tests/hf/test_hf_cli.py", "tests/migration/test_nemo2_scripts.py",
                 "tests/distributed/test_packed_parity.py", "tests/peft/test_lora.py")


def unit_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return DAEMONS if path in DAEMON_FILES else path


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    from xdist.scheduler import LoadScopeScheduling

    class FileUnits(LoadScopeScheduling):
        """xdist's scope scheduling with `unit_of` as the scope, longest units first."""

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            if not self.assigned_work.get(node) and not any(self.assigned_work.values()):
                # the first assignment: the queue is complete, put the longest units first
                rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
                units = sorted(self.workqueue.items(), key=lambda kv: rank.get(kv[0], len(rank)))
                self.workqueue.clear()
                self.workqueue.update(units)
            super()._assign_work_unit(node)

    return FileUnits(config, log)
