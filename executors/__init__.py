"""Executors for nemo_lite: launch the same recipe on this machine, on a Slurm cluster or in Docker.

    import executors
    from recipes import tiny_gpt

    executors.run_and_wait(tiny_gpt.pretrain_recipe(), executors.torchrun(ntasks_per_node=2),
                           name="tiny")
    executors.run_and_wait(tiny_gpt.pretrain_recipe(),
                           executors.slurm(account="acct", partition="debug", ntasks_per_node=2),
                           name="tiny")
    executors.run_and_wait(tiny_gpt.pretrain_recipe(),
                           executors.docker(container_image="nemo-lite:latest", ntasks_per_node=2),
                           name="tiny")

`local`, `torchrun`, `slurm`, `docker` return `run.Config`s that build NeMo-Run executors
(LocalExecutor, LocalExecutor + torchrun, SlurmExecutor, DockerExecutor); the CLI selects them with `run.executor=NAME` and
overrides their fields with `run.executor.FIELD=VALUE`. `run_and_wait` checks, submits, shows
the logs and raises `JobFailed` when the job did not succeed. See docs/executors.md.
"""

from executors.errors import ExecutorError, JobFailed
from executors.factories import (
    FACTORIES,
    check_name,
    docker,
    get,
    local,
    names,
    slurm,
    torchrun,
)
from executors.launch import RunResult, build, prepare, run_and_wait, run_experiment
from executors.slurm import check_cluster, check_code, preflight

__all__ = ["ExecutorError", "build", "FACTORIES", "JobFailed", "RunResult", "check_cluster", "check_code",
           "check_name", "docker", "get", "local", "names", "preflight", "prepare", "run_and_wait", "run_experiment", "slurm",
           "torchrun"]
