"""Run one task (or an experiment of several) on an executor, show the logs while it runs, and
return (or raise) the state.

NeMo-Run's `run.run` / `Experiment` exit normally when a job FAILED; `run_and_wait` raises
`JobFailed` instead (the CLI exits 1), after the checks that must come before a submission.
"""

import contextlib
import copy
import glob
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fiddle as fdl
import nemo_run as run

from executors import docker_engine as docker_executor
from executors import safety
from executors.errors import ExecutorError, JobFailed
from executors.slurm import SECRETS_ATTR, SECRETS_FILE_ATTR, preflight, secret_env, upload_secrets


@dataclass
class RunResult:
    """What happened to a task: `state` is NeMo-Run's (SUCCEEDED, FAILED, CANCELLED, UNKNOWN,
    or RUNNING / PENDING when detached); `job_id` Slurm's job id or the local app id."""

    name: str
    state: str
    job_id: str
    experiment_id: str
    job_dir: str
    handle: str

    @property
    def ok(self) -> bool:
        return self.state == "SUCCEEDED"

    def logs(self) -> list[str]:
        """The task's log files, oldest first (Slurm: the job script's, then one per start of
        the job; NeMo-Run's local copies of them are left out)."""
        if not os.path.isdir(self.job_dir):
            return []
        prefix = f"sbatch_nemo_lite.{safety.slug(self.name, 'nemo_lite')}_"
        names = [f for f in os.listdir(self.job_dir) if f.endswith((".out", ".log", ".err"))
                 and (f.startswith(("log", prefix)))]
        paths = [os.path.join(self.job_dir, f) for f in names]
        # local / torchrun: NeMo-Run's local scheduler keeps <app>/<role>/<replica>/combined.log
        paths += glob.glob(os.path.join(self.job_dir, "nemo_run", "*", "*", "*", "combined.log"))
        return sorted(paths, key=os.path.getmtime)


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """`extra` in os.environ while launching: local processes and a local sbatch inherit it
    (sbatch exports the submitting environment), and nothing is written to a file."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build(config: Any) -> Any:
    """`fdl.build(config)` for an executor Config; input errors come out as the plain
    ExecutorError (Fiddle wraps exceptions to add its build context to the message)."""
    if not isinstance(config, fdl.Buildable):
        return config
    try:
        return fdl.build(config)
    except ExecutorError as error:
        raise getattr(error, "proxy_base_exception", error) from None


def prepare(executor: Any, name: str, preflight_checks: bool = True) -> Any:
    """A built executor (from a run.Config or an executor), checked for submission."""
    executor = build(executor)
    if not isinstance(executor, run.Executor):
        raise ExecutorError(f"not an executor: {executor!r}")
    if isinstance(executor, run.SlurmExecutor):
        if not hasattr(executor, SECRETS_ATTR):  # a plain NeMo-Run executor: same rules
            for key in executor.env_vars:
                if safety.is_secret(key):
                    raise ExecutorError(
                        f"secret {key} in SlurmExecutor.env_vars would be written in clear into "
                        "the sbatch script and logs: build the executor with executors.slurm("
                        "env_vars=...) instead.")
            safety.check_env_names(executor.env_vars)
            executor.setup_lines = "\n".join(
                [*safety.export_lines(executor.env_vars), executor.setup_lines or ""])
            executor.env_vars = {}
        # NeMo-Run writes the job name into the script's srun line unquoted (log paths)
        if executor.job_name_prefix is None:
            executor.job_name_prefix = "nemo_lite."
        for what, value in (("job_name_prefix", executor.job_name_prefix),
                            ("job_details.job_name", executor.job_details.job_name)):
            if value and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
                raise ExecutorError(f"SlurmExecutor.{what} {value!r}: use letters, digits and "
                                    "'_.-' only (NeMo-Run writes it unquoted into the script).")
        for field in ("account", "partition", "qos"):
            safety.check_slurm_name(field, getattr(executor, field))
        # the original name reaches the job as data: quoted #SBATCH --comment and an env var
        executor.additional_parameters = {**(executor.additional_parameters or {}),
                                          "comment": name}
        executor.setup_lines = "\n".join(
            [executor.setup_lines or "", f"export NEMO_LITE_JOB_NAME={safety.quote(name)}"])
        if preflight_checks:
            preflight(executor)
    elif isinstance(executor, run.DockerExecutor):
        if not hasattr(executor, SECRETS_ATTR):  # a plain NeMo-Run executor: same rules
            safety.check_env_names(executor.env_vars)
            for key in executor.env_vars:
                if safety.is_secret(key):
                    raise ExecutorError(
                        f"secret {key} in DockerExecutor.env_vars would be saved in clear in "
                        "NeMo-Run's job files: build the executor with executors.docker("
                        "env_vars=...) instead.")
        for volume in executor.volumes:
            docker_executor.check_volume(volume)
        if preflight_checks:
            with _environ(docker_executor.engine_environment(executor)):
                docker_executor.preflight(executor)
    return executor


def _job_id(handle: str) -> str:
    match = re.match(r"[^:]+://[^/]*/([^/]+)", handle or "")
    return match[1] if match else ""


def _launch_environment(executor: Any) -> tuple[Any, dict[str, str], str | None, str | None]:
    """(executor, environment to launch in, remote secrets file, local secrets directory).
    Secrets never go into executor fields: see docs/executors.md."""
    secrets = secret_env(executor)
    remote_secrets = getattr(executor, SECRETS_FILE_ATTR, None)
    if remote_secrets:
        upload_secrets(executor)
    in_container = isinstance(executor, run.DockerExecutor)
    env = {} if remote_secrets or in_container else secrets
    if isinstance(executor, run.LocalExecutor):  # torchrun / python of this environment first,
        # also when it is not activated (a notebook kernel, .venv/bin/python script.py)
        env["PATH"] = f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"
    secrets_dir = None
    if in_container:
        env.update(docker_executor.engine_environment(executor))
        if secrets:  # on a copy: the caller's executor keeps no per-run mount
            executor = copy.deepcopy(executor)
            secrets_dir = docker_executor.write_secrets(executor, secrets)
    return executor, env, remote_secrets, secrets_dir


def _clean_up(executor: Any, remote_secrets: str | None, secrets_dir: str | None) -> None:
    if remote_secrets:
        with contextlib.suppress(Exception):
            executor.tunnel.run(f"rm -f {shlex.quote(remote_secrets)}", hide=True, warn=True)
    if secrets_dir:
        shutil.rmtree(secrets_dir, ignore_errors=True)


def _result(job: Any, name: str, experiment_id: str, detach: bool) -> RunResult:
    state = getattr(job.state, "name", str(job.state))
    if (isinstance(job.executor, run.DockerExecutor) and not detach
            and state not in ("SUCCEEDED", "FAILED", "CANCELLED")):
        # NeMo-Run may look after the engine removed the container: its status file decides
        state = docker_executor.state_from_status_file(job.executor.job_dir) or state
    handle = job.handle or ""
    return RunResult(name=name, state=state, job_id=_job_id(handle), experiment_id=experiment_id,
                     job_dir=job.executor.job_dir, handle=handle)


def _failure(result: RunResult, executor: Any) -> JobFailed:
    logs = result.logs()
    if logs:  # a short job can end before NeMo-Run's log tailing shows anything
        with open(logs[-1], errors="replace") as f:
            tail = f.readlines()[-20:]
        print(f"--- last lines of {logs[-1]}:", "".join(tail), sep="\n", file=sys.stderr)
    where = f"; log: {logs[-1]}" if logs else f"; job directory: {result.job_dir}"
    return JobFailed(f"job '{result.name}' ({type(executor).__name__} {result.job_id}) ended "
                     f"{result.state}{where}", result)


def _check_task(task: Any) -> None:
    if not isinstance(task, (fdl.Buildable, run.Script)):
        raise ExecutorError(f"not a task: {task!r} (expected a run.Partial or run.Script)")


def run_and_wait(task: Any, executor: Any, name: str = "nemo_lite", *, detach: bool = False,
                 tail_logs: bool = True, check: bool = True, preflight_checks: bool = True,
                 log_level: str = "INFO") -> RunResult:
    """Submit `task` (a run.Partial such as a recipe, or a run.Script) on `executor` (a
    run.Config from `executors.local/torchrun/slurm/docker`, or a NeMo-Run executor), print its
    logs while it runs, wait for the end, and return a RunResult.

    With `check` (default) a job that did not succeed raises JobFailed. Bad input or an
    unreachable cluster raise ExecutorError before anything is submitted. `name` may be any
    text: files and Slurm's job name use a slug of it, the job sees it as $NEMO_LITE_JOB_NAME.
    `detach=True` (Slurm) returns once the job is submitted.
    """
    _check_task(task)
    executor = prepare(executor, name, preflight_checks)
    title = safety.slug(name, "nemo_lite")
    executor, env, remote_secrets, secrets_dir = _launch_environment(executor)
    try:
        with _environ(env), run.Experiment(title, executor=executor, log_level=log_level) as exp:
            exp.add(task, name=title, tail_logs=tail_logs)
            exp.run(detach=detach)
    finally:
        if not detach:  # a detached job still needs its secrets
            _clean_up(executor, remote_secrets, secrets_dir)
    result = _result(exp.jobs[0], name, exp._id, detach)
    if check and not detach and not result.ok:
        raise _failure(result, executor)
    return result


def run_experiment(tasks: dict[str, Any], executor: Any, title: str = "nemo_lite", *,
                   sequential: bool = True, tail_logs: bool = True, check: bool = True,
                   preflight_checks: bool = True, log_level: str = "INFO") -> list[RunResult]:
    """Several tasks in one NeMo-Run Experiment, e.g. `{"pretrain": recipe, "validate": val}`,
    on one executor: with `sequential` (default) each starts when the one before it ended.
    Logs are shown live; returns a RunResult per task, in order. With `check`, any task that
    did not succeed raises JobFailed naming the first one (NeMo-Run itself exits 0)."""
    if not tasks:
        raise ExecutorError("run_experiment needs at least one task: {name: task, ...}.")
    for task in tasks.values():
        _check_task(task)
    names = [safety.slug(name, f"task{i}") for i, name in enumerate(tasks)]
    if len(set(names)) != len(names):
        raise ExecutorError(f"task names {list(tasks)} give the same file names {names}: "
                            "make them differ in letters or digits.")
    executor = prepare(executor, title, preflight_checks)
    executor, env, remote_secrets, secrets_dir = _launch_environment(executor)
    try:
        with _environ(env), run.Experiment(safety.slug(title, "nemo_lite"), executor=executor,
                                           log_level=log_level) as exp:
            for slug, task in zip(names, tasks.values(), strict=True):
                exp.add(task, name=slug, tail_logs=tail_logs)
            exp.run(sequential=sequential)
    finally:
        _clean_up(executor, remote_secrets, secrets_dir)
    results = [_result(job, name, exp._id, False) for job, name in zip(exp.jobs, tasks, strict=True)]
    failed = [r for r in results if not r.ok]
    if check and failed:
        raise _failure(failed[0], executor)
    return results
