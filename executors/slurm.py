"""NeMo-Run's SlurmExecutor, configured for nemo_lite, and the checks run before a submission.

`build_slurm` makes the executor (no I/O); `preflight` checks the cluster and the code to
package just before a job is submitted (`executors.run_and_wait` and the CLI call it).
"""

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from typing import Any, Optional

import nemo_run as run

from executors import safety
from executors.errors import ExecutorError

#: private attributes of a built executor (not dataclass fields: never serialized by NeMo-Run)
SECRETS_ATTR = "_nemo_lite_secrets"
SECRETS_FILE_ATTR = "_nemo_lite_secrets_file"
OPTIONS_ATTR = "_nemo_lite_options"
PREFLIGHT_TIMEOUT = float(os.environ.get("NEMO_LITE_SLURM_TIMEOUT", "10"))
PACKAGERS = ("git", "none")


def _venv_of_this_python() -> Optional[str]:
    return sys.prefix if sys.prefix != sys.base_prefix else None


def build_slurm(
    account: Optional[str] = None,
    partition: Optional[str] = None,
    nodes: int = 1,
    ntasks_per_node: int = 1,
    time: str = "01:00:00",
    gpus_per_node: Optional[int] = None,
    cpus_per_task: Optional[int] = None,
    mem: Optional[str] = None,
    qos: Optional[str] = None,
    launcher: Optional[str] = "torchrun",
    container_image: Optional[str] = None,
    container_mounts: Optional[list[str]] = None,
    env_vars: Optional[dict[str, str]] = None,
    pass_env: Optional[list[str]] = None,
    venv: Optional[str] = None,
    setup_lines: Optional[str] = None,
    ssh_host: Optional[str] = None,
    ssh_user: Optional[str] = None,
    ssh_identity: Optional[str] = None,
    ssh_port: Optional[int] = None,
    job_dir: Optional[str] = None,
    packager: str = "git",
    allow_dirty: bool = False,
    retries: int = 0,
    signal_before_limit_s: Optional[int] = 120,
    max_restarts: int = 0,
) -> run.SlurmExecutor:
    """A Slurm cluster: `nodes` x `ntasks_per_node` ranks (torchrun on each node by default).

    Submits from this machine (a login node: `sbatch` on PATH, NeMo-Run's LocalTunnel) or, with
    `ssh_host` (+ `ssh_user`, `job_dir` on the cluster, `ssh_identity`, `ssh_port`), over SSH.

    - `account`, `partition` are required; `time`, `qos`, `mem`, `gpus_per_node`,
      `cpus_per_task` become #SBATCH options. `container_image` / `container_mounts` need
      Pyxis on the cluster.
    - `env_vars` are exported in the job (values shell-quoted). Names containing KEY, TOKEN,
      SECRET or PASSWORD are secrets: their values are kept out of every file NeMo-Run and
      nemo_lite write (see docs/executors.md). `pass_env` names variables of the submitting
      environment to forward (over SSH too).
    - `venv`: the virtual environment put first on the job's PATH (default: this Python's venv
      when submitting locally; none over SSH). `setup_lines`: trusted shell lines run before
      the job (not quoted).
    - `packager`: "git" (default) archives the current directory's git repository at HEAD as
      the job's working directory and refuses uncommitted or untracked files unless
      `allow_dirty=True`; "none" packages nothing (the job imports the code installed in its
      environment).
    - Jobs are submitted with `sbatch --requeue` (NeMo-Run's): a preempted or requeued job
      restarts, and nemo_lite recipes resume from their newest checkpoint. `retries`: requeue a
      failed job up to this many times.
    - `signal_before_limit_s`: ask Slurm for SIGUSR1 this many seconds before the time limit
      (`--signal=USR1@<s>`; Slurm may send it up to 60 s earlier). nemo_lite's trainer then
      checkpoints an agreed step, requeues the job and exits (PreemptionCallback), and the
      requeued job resumes. torchrun is told to forward SIGUSR1 to the ranks rather than die
      of it. None: no signal before the limit (a script that does not handle SIGUSR1).
    - `max_restarts`: torchrun restarts the ranks of every node after one fails, up to this
      many times, within the job; they resume from the newest complete checkpoint.
    """
    missing = [name for name, value in (("account", account), ("partition", partition))
               if not value]
    if missing:
        sets = " ".join(f"run.executor.{m}=NAME" for m in missing)
        raise ExecutorError(
            f"the slurm executor needs {' and '.join(missing)}: set {sets} on the command line, "
            f"or executors.slurm({', '.join(m + '=...' for m in missing)}) in Python.")
    for field, value in (("account", account), ("partition", partition), ("qos", qos),
                         ("mem", mem), ("time", time)):
        safety.check_slurm_name(field, value)
    if int(nodes) < 1 or int(ntasks_per_node) < 1:
        raise ExecutorError(f"nodes ({nodes}) and ntasks_per_node ({ntasks_per_node}) must be >= 1.")
    if launcher not in (None, "torchrun"):
        raise ExecutorError(f"unknown launcher {launcher!r} for slurm: use 'torchrun' or None "
                            "(srun starts ntasks_per_node processes itself).")
    if signal_before_limit_s is not None and not (
            str(signal_before_limit_s).isdigit() and 0 < int(signal_before_limit_s) <= 65535):
        raise ExecutorError(f"signal_before_limit_s={signal_before_limit_s}: give seconds "
                            "between 1 and 65535, or None for no signal before the time limit.")
    restarts = restart_env(max_restarts)
    if restarts and launcher != "torchrun":
        raise ExecutorError(f"max_restarts={max_restarts} needs launcher='torchrun' (torchrun "
                            "restarts the ranks; srun alone does not).")
    if packager not in PACKAGERS:
        raise ExecutorError(f"unknown packager {packager!r}: choose one of {', '.join(PACKAGERS)}.")
    plain, secrets = safety.split_secrets(env_vars)
    safety.check_env_names(pass_env or [], "pass_env")

    if ssh_host:
        if not job_dir:
            raise ExecutorError("the slurm executor over SSH needs job_dir: a directory on the "
                                "cluster for job files (run.executor.job_dir=/path).")
        safety.check_path("job_dir", job_dir)
        tunnel: Any = run.SSHTunnel(host=ssh_host, user=ssh_user or os.environ.get("USER", ""),
                                    job_dir=job_dir, identity=ssh_identity, port=ssh_port)
    else:
        if job_dir:
            raise ExecutorError(
                "job_dir is for SSH submissions only: submitting from this machine, jobs live "
                "in NeMo-Run's experiments directory ($NEMORUN_HOME/experiments; set "
                "NEMORUN_HOME to move it).")
        # "" = NeMo-Run's own experiments directory: the local tunnel copies nothing, so the
        # job directory must be where the experiment writes its files.
        tunnel = run.LocalTunnel(job_dir="")
        venv = venv if venv is not None else _venv_of_this_python()

    lines = ["# nemo_lite: job environment (values are shell-quoted data)"]
    if venv:
        lines.append(f"export VIRTUAL_ENV={safety.quote(venv)}")
        lines.append(f'export PATH={safety.quote(os.path.join(venv, "bin"))}:"$PATH"')
    lines += safety.export_lines(plain)
    secrets_file = None
    if ssh_host and (secrets or pass_env):
        # The submitting environment does not reach a job submitted over SSH: secrets go to a
        # mode-600 file on the cluster (written at submission), read here with tracing off.
        secrets_file = os.path.join(job_dir, ".nemo_lite_secrets", f"{uuid.uuid4().hex}.env")
        quoted = safety.quote(secrets_file)
        lines += ["{ set +vx; } 2>/dev/null",
                  f"if [ -r {quoted} ]; then set -a; . {quoted}; set +a; else "
                  f"echo 'nemo_lite: missing secrets file (submit with executors.run_and_wait)' >&2; "
                  "exit 1; fi",
                  "set -vx"]
    if signal_before_limit_s is not None and launcher == "torchrun":
        # Slurm signals every process of a step: torchrun's agent, left to SIGUSR1's default
        # action, would die and take the step down mid-checkpoint; it forwards these instead
        lines.append("export PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1")
    lines += safety.export_lines(restarts)
    if setup_lines:
        lines.append(setup_lines)

    pack = make_packager(packager, allow_dirty)

    executor = run.SlurmExecutor(
        account=account, partition=partition, nodes=int(nodes),
        ntasks_per_node=int(ntasks_per_node), time=time, gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task, mem=mem, qos=qos, launcher=launcher,
        container_image=container_image, container_mounts=list(container_mounts or []),
        env_vars={}, setup_lines="\n".join(lines), tunnel=tunnel, packager=pack,
        retries=int(retries), job_name_prefix="nemo_lite.",
        signal=None if signal_before_limit_s is None else f"USR1@{int(signal_before_limit_s)}",
        # its start-time poller prints every 30 s while pending: the run helper shows state
        poll_estimated_start_time=False,
    )
    setattr(executor, SECRETS_ATTR, secrets)
    setattr(executor, SECRETS_FILE_ATTR, secrets_file)
    setattr(executor, OPTIONS_ATTR, (packager, allow_dirty, list(pass_env or [])))
    return executor


def restart_env(max_restarts: Any) -> dict[str, str]:
    """torchrun's `--max-restarts` as the environment passes it (PET_ = torchrun's options)."""
    if not str(max_restarts).isdigit():
        raise ExecutorError(f"max_restarts={max_restarts!r}: give a whole number >= 0.")
    return {"PET_MAX_RESTARTS": str(int(max_restarts))} if int(max_restarts) else {}


# --- checks before submission -------------------------------------------------------------

def _run_local(cmd: list[str], timeout: float, strip: bool = True) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"no answer within {timeout:g} s"
    except OSError as error:
        return 127, str(error)
    out = proc.stdout + proc.stderr
    return proc.returncode, out.strip() if strip else out


def _run_remote(tunnel: Any, cmd: list[str], timeout: float) -> tuple[int, str]:
    line = f"timeout {int(timeout)} " + " ".join(shlex.quote(c) for c in cmd)
    result = tunnel.run(line, hide=True, warn=True)
    return result.return_code, (result.stdout + result.stderr).strip()


def check_cluster(executor: run.SlurmExecutor, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Raise ExecutorError unless Slurm's commands are there, slurmctld answers, and a job of
    this executor's shape would be accepted (`sbatch --test-only`: account, partition, size)."""
    remote = isinstance(executor.tunnel, run.SSHTunnel)
    where = f"on {executor.tunnel.host}" if remote else "on this machine"
    if remote:
        try:
            executor.tunnel.connect()  # NeMo-Run's: sys.exit(1) when authentication fails
        except (Exception, SystemExit) as error:  # noqa: BLE001 - said in one line
            raise ExecutorError(f"cannot connect to {executor.tunnel.user}@"
                                f"{executor.tunnel.host} over SSH ({error!r}): check ssh_host, "
                                "ssh_user, ssh_port and ssh_identity") from None

        def call(cmd: list[str]) -> tuple[int, str]:
            return _run_remote(executor.tunnel, cmd, timeout)

        code, out = call(["sh", "-c", "for c in sbatch sacct scontrol; do command -v $c "
                          ">/dev/null || echo $c; done"])
        missing = out.split() if code == 0 else ["sbatch"]
    else:
        def call(cmd: list[str]) -> tuple[int, str]:
            return _run_local(cmd, timeout)

        missing = [c for c in ("sbatch", "sacct", "scontrol") if shutil.which(c) is None]
    if missing:
        raise ExecutorError(
            f"{', '.join(missing)} not found {where}: the slurm executor needs Slurm's client "
            "commands (sacct too: NeMo-Run follows jobs through accounting). Submit from a "
            "login node, install slurm-client, or use ssh_host=...")
    code, out = call(["scontrol", "ping"])
    if code != 0 or "is UP" not in out:
        detail = " ".join(out.split())[:300]
        raise ExecutorError(f"slurmctld is not reachable {where} (scontrol ping: {detail}). "
                            "Is the cluster up and SLURM_CONF right?")
    shape = ["sbatch", "--test-only", f"--account={executor.account}",
             f"--partition={executor.partition}", f"--nodes={executor.nodes}",
             f"--ntasks-per-node={executor.ntasks_per_node}", f"--time={executor.time}"]
    for flag, value in (("qos", executor.qos), ("mem", executor.mem),
                        ("gpus-per-node", executor.gpus_per_node),
                        ("cpus-per-task", executor.cpus_per_task)):
        if value is not None:
            shape.append(f"--{flag}={value}")
    code, out = call([*shape, "--wrap", "true"])
    if code != 0:
        detail = " ".join(line.removeprefix("sbatch: error: ") for line in out.splitlines())
        raise ExecutorError(f"Slurm refuses this job ({detail.strip()[:300]}): check account "
                            f"'{executor.account}', partition '{executor.partition}', nodes, "
                            "time and resources.")


def make_packager(packager: str, allow_dirty: bool) -> Any:
    """"git": the current repository at HEAD, refusing uncommitted or untracked files unless
    allow_dirty; "none": nothing (the job imports the code installed where it runs)."""
    if packager == "git":
        return run.GitArchivePackager(check_uncommitted_changes=not allow_dirty,
                                      check_untracked_files=not allow_dirty)
    return run.Packager()


def check_code(executor: run.SlurmExecutor, cwd: Optional[str] = None) -> None:
    """The git packager archives the current directory's repository: it must be one, and clean
    unless allow_dirty."""
    pack = executor.packager
    if not isinstance(pack, run.GitArchivePackager):
        return
    allow_dirty = not (pack.check_uncommitted_changes or pack.check_untracked_files)
    cwd = cwd or os.getcwd()
    code, top = _run_local(["git", "-C", cwd, "rev-parse", "--show-toplevel"], 10)
    if code != 0:
        raise ExecutorError(
            f"packager='git' archives the git repository of the current directory, and {cwd} "
            "is not in one: run from your project's repository, or set packager='none' (the "
            "job then uses the code installed in its environment).")
    if allow_dirty:
        return
    code, status = _run_local(["git", "-C", top, "status", "--porcelain",
                               "--untracked-files=normal"], 30, strip=False)
    files = [line[3:] for line in status.splitlines() if line.strip()]
    if code != 0 or files:
        shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
        raise ExecutorError(
            f"the git repository {top} has uncommitted or untracked files ({shown}); the job "
            "would run the last commit without them: commit them, or set allow_dirty=True "
            "(run.executor.allow_dirty=True) to run the last commit anyway, or packager='none'.")


def check_paths(executor: run.SlurmExecutor) -> None:
    from nemo_run.config import get_nemorun_home

    if isinstance(executor.tunnel, run.LocalTunnel):
        safety.check_path("NeMo-Run's experiments directory (NEMORUN_HOME)",
                          os.path.join(get_nemorun_home(), "experiments"))


def preflight(executor: run.SlurmExecutor, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Everything that can be checked before a submission, cheapest first."""
    check_paths(executor)
    check_code(executor)
    check_cluster(executor, timeout)


def secret_env(executor: Any) -> dict[str, str]:
    """The secret values a built executor carries (in memory only) plus its pass_env values."""
    secrets = dict(getattr(executor, SECRETS_ATTR, {}) or {})
    _, _, pass_env = getattr(executor, OPTIONS_ATTR, (None, None, []))
    for name in pass_env:
        if name in os.environ:
            secrets.setdefault(name, os.environ[name])
    return secrets


def upload_secrets(executor: run.SlurmExecutor) -> None:
    """Over SSH: write the secrets file (mode 600) that the job's setup lines read."""
    path = getattr(executor, SECRETS_FILE_ATTR, None)
    if not path:
        return
    import io

    content = "".join(f"{line}\n" for line in safety.export_lines(secret_env(executor)))
    directory = shlex.quote(os.path.dirname(path))
    executor.tunnel.run(f"umask 077 && mkdir -p {directory} && cat > {shlex.quote(path)}",
                        hide=True, in_stream=io.StringIO(content))
