"""Executors on the command line: `run.executor=local|torchrun|slurm|docker`.

The factories live in the `executors` package (imported here, which registers them with
NeMo-Run); `run.executor.FIELD=VALUE` overrides their parameters. A task launched with an
executor goes through `executors.run_and_wait`: the cluster is checked before anything is
submitted, logs are shown while it runs, and the command exits 1 when the job did not succeed
(NeMo-Run alone exits 0). Unknown executor names fail with the list of known ones.
"""

from __future__ import annotations

import sys
from typing import Any

import executors  # noqa: F401 - registers the run.executor=NAME factories


def check_executor_name(name: str) -> None:
    executors.check_name(name)


def check_executor(config: Any) -> Any:
    """Build the executor once to check its fields (account, partition, names...); its own
    one-line error, without Fiddle's context, when they are wrong."""
    executors.build(config)
    return config


def launch_task(ctx: Any, fn: Any, task_args: list[str]) -> bool:
    """Run the CLI's task on its executor through `executors.run_and_wait`; False when NeMo-Run's
    own path applies (no executor, --direct, --repl, or an export)."""
    if (ctx.executor is None or ctx.direct or ctx.repl
            or any((ctx.to_yaml, ctx.to_toml, ctx.to_json))):
        return False
    import nemo_run as run

    task = ctx.parse_fn(fn, task_args)
    run.dryrun_fn(task, executor=ctx.executor)
    if ctx.dryrun:
        return True
    if not ctx._should_continue(ctx.skip_confirmation):
        return True
    try:
        executors.run_and_wait(task, ctx.executor, name=ctx.name or "nemo_lite",
                               detach=ctx.detach)
    except executors.JobFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        raise SystemExit(1) from None
    return True
