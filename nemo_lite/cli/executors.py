"""Executor factories for `run.executor=NAME` on the command line.

`local`: NeMo-Run's LocalExecutor, launching the task with torchrun on this machine
(`run.executor=local run.executor.ntasks_per_node=2`). Slurm and Docker executors come with
the executors issue.
"""

from typing import Optional

import nemo_run as run


@run.cli.factory(name="local")
def local(ntasks_per_node: int = 1, launcher: Optional[str] = "torchrun") -> run.Config[run.LocalExecutor]:
    """This machine, `ntasks_per_node` ranks started by torchrun."""
    return run.Config(run.LocalExecutor, ntasks_per_node=ntasks_per_node, launcher=launcher)
