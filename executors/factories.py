"""The executors by name: `local`, `torchrun`, `slurm`, `docker`.

Each factory returns a `run.Config` that builds the NeMo-Run executor (`fdl.build(cfg)`, or hand
the Config to `executors.run_and_wait`): every field stays overridable after the factory ran,
which is what the CLI does with `run.executor=slurm run.executor.partition=debug ...`. Input is
checked when the Config is built (before anything runs), the cluster just before submission.
"""

import inspect
from collections.abc import Callable
from typing import Any, Optional

import nemo_run as run

from executors import safety
from executors.docker_engine import build_docker
from executors.errors import ExecutorError
from executors.slurm import SECRETS_ATTR, build_slurm, restart_env


def build_local(ntasks_per_node: int = 1, env_vars: Optional[dict[str, str]] = None) -> run.LocalExecutor:
    """One process on this machine, no launcher: the recipe runs as a single rank
    (trainer.devices=1). For several ranks use `torchrun`."""
    if int(ntasks_per_node) != 1:
        raise ExecutorError(
            f"the local executor runs one process (ntasks_per_node={ntasks_per_node} asked): for "
            f"{ntasks_per_node} ranks on this machine use run.executor=torchrun "
            f"run.executor.ntasks_per_node={ntasks_per_node}.")
    plain, secrets = safety.split_secrets(env_vars)
    executor = run.LocalExecutor(ntasks_per_node=1, launcher=None, env_vars=plain)
    setattr(executor, SECRETS_ATTR, secrets)
    return executor


def build_torchrun(ntasks_per_node: int = 1, env_vars: Optional[dict[str, str]] = None,
                   max_restarts: int = 0) -> run.LocalExecutor:
    """`ntasks_per_node` ranks on this machine, started by torchrun (gloo on CPU, NCCL on GPU:
    nemo_lite picks the backend from the device). `max_restarts`: torchrun restarts all ranks
    after a rank fails, up to this many times, and they resume from the newest complete
    checkpoint (torchrun's `--max-restarts`, passed as PET_MAX_RESTARTS)."""
    if int(ntasks_per_node) < 1:
        raise ExecutorError(f"ntasks_per_node must be >= 1 (got {ntasks_per_node}).")
    plain, secrets = safety.split_secrets(env_vars)
    plain.update(restart_env(max_restarts))
    executor = run.LocalExecutor(ntasks_per_node=int(ntasks_per_node), launcher="torchrun",
                                 env_vars=plain)
    setattr(executor, SECRETS_ATTR, secrets)
    return executor


def _config_factory(builder: Callable[..., Any], returns: type, name: str) -> Callable[..., Any]:
    """A factory with `builder`'s parameters that returns `run.Config(builder, ...)`."""
    signature = inspect.signature(builder)

    def factory(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        return run.Config(builder, **bound.arguments)

    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = "executors"
    factory.__doc__ = builder.__doc__
    factory.__signature__ = signature.replace(return_annotation=run.Config[returns])
    factory.__annotations__ = {**builder.__annotations__, "return": run.Config[returns]}
    return run.cli.factory(name=name)(factory)


local = _config_factory(build_local, run.LocalExecutor, "local")
torchrun = _config_factory(build_torchrun, run.LocalExecutor, "torchrun")
slurm = _config_factory(build_slurm, run.SlurmExecutor, "slurm")
# NeMo-Run's CLI looks executors up under Executor, LocalExecutor, SkypilotExecutor and
# SlurmExecutor only: the Docker factory is registered as an Executor.
docker = _config_factory(build_docker, run.Executor, "docker")

FACTORIES: dict[str, Callable[..., Any]] = {"local": local, "torchrun": torchrun, "slurm": slurm,
                                            "docker": docker}


def names() -> list[str]:
    return list(FACTORIES)


def check_name(name: str) -> None:
    """Raise ExecutorError naming the known executors for an unknown `name`."""
    import difflib

    base = str(name).split("(")[0].strip()
    if base in FACTORIES or "." in base:  # dotted names are NeMo-Run imports
        return
    close = difflib.get_close_matches(base, names(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ExecutorError(f"unknown executor '{base}'.{hint} Known executors: {', '.join(names())}.")


def get(name: str, **fields: Any) -> Any:
    """`run.Config` of the executor `name` with `fields` set (e.g. get("slurm", account="a"))."""
    check_name(name)
    return FACTORIES[name](**fields)
