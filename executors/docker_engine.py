"""NeMo-Run's DockerExecutor, configured for nemo_lite, and the checks run before a launch.

`build_docker` makes the executor (no I/O); `preflight` checks the engine, the image and the
code to package just before a container starts (`executors.run_and_wait` and the CLI call it).

What reaches the container is data, never shell: NeMo-Run hands image, volumes and environment
to the Docker API as values. Containers run unprivileged (no `--privileged`, every Linux
capability dropped, no privilege escalation) and see only the volumes asked for, plus the job
directory NeMo-Run mounts at /nemo_run. Secrets (environment names with KEY, TOKEN, SECRET or
PASSWORD) never enter the executor's fields, which NeMo-Run saves in clear: they go to a
mode-600 file, mounted read-only at /run/nemo_lite_secrets for the length of the run, which
nemo_lite's `llm.train` reads (see docs/executors.md). The container runs as the submitting
user (uid:gid), so what it writes in mounted directories belongs to that user.
"""

import os
import re
import shutil
import subprocess
from typing import Any, Optional

import nemo_run as run

from executors import safety
from executors.errors import ExecutorError
from executors.slurm import OPTIONS_ATTR, SECRETS_ATTR, check_code, make_packager

DOCKER_HOST_ATTR = "_nemo_lite_docker_host"
NETWORK = "nemo_lite"
#: where NeMo-Run mounts the job directory in the container
JOB_MOUNT = "/nemo_run"
SECRETS_MOUNT = "/run/nemo_lite_secrets"
PREFLIGHT_TIMEOUT = float(os.environ.get("NEMO_LITE_DOCKER_TIMEOUT", "10"))
_SIZE = re.compile(r"\d+(\.\d+)?[bkmg]?\Z", re.I)
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:@-]*\Z")


def gpus_on_this_machine() -> int:
    """NVIDIA GPUs the local engine can hand to containers (0 without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def check_volume(spec: str) -> str:
    """`HOST:CONTAINER[:ro|rw]` with absolute paths and an existing host path."""
    parts = str(spec).split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise ExecutorError(f"volume {spec!r}: write HOST_PATH:CONTAINER_PATH or "
                            "HOST_PATH:CONTAINER_PATH:ro (absolute paths).")
    host, container = parts[0], parts[1]
    if not os.path.isabs(host) or not os.path.isabs(container):
        raise ExecutorError(f"volume {spec!r}: both paths must be absolute.")
    if not os.path.exists(host):
        raise ExecutorError(f"volume {spec!r}: host path {host} does not exist.")
    if container.rstrip("/") == JOB_MOUNT or container.startswith(JOB_MOUNT + "/"):
        raise ExecutorError(f"volume {spec!r}: {JOB_MOUNT} is where NeMo-Run mounts the job "
                            "directory; choose another container path.")
    return str(spec)


def build_docker(
    container_image: Optional[str] = None,
    ntasks_per_node: int = 1,
    volumes: Optional[list[str]] = None,
    shm_size: Optional[str] = "2g",
    network: str = NETWORK,
    num_gpus: Optional[int] = None,
    ipc_mode: Optional[str] = None,
    ulimits: Optional[list[str]] = None,
    env_vars: Optional[dict[str, str]] = None,
    pass_env: Optional[list[str]] = None,
    packager: str = "git",
    allow_dirty: bool = False,
    retries: int = 0,
    docker_host: Optional[str] = None,
    user: Optional[str] = None,
) -> run.DockerExecutor:
    """A container on this machine's Docker engine, `ntasks_per_node` ranks started by torchrun.

    - `container_image` (required): an image in the engine's store or a registry. It needs
      Python with nemo_lite's dependencies; nemo_lite itself comes from the image or from the
      packaged code.
    - `volumes`: `HOST:CONTAINER[:ro]` mounts, nothing else is shared besides the job
      directory (mounted at /nemo_run). `shm_size` sizes /dev/shm (data loader workers, NCCL).
    - `network`: a user-defined bridge network NeMo-Run creates (default "nemo_lite"), or
      "host"/"none". `num_gpus`: None = every GPU of this machine when it has any, 0 = none,
      -1 = all, N = N (needs the NVIDIA container toolkit).
    - `env_vars`: set in the container. Names with KEY, TOKEN, SECRET or PASSWORD are secrets
      and kept out of every file NeMo-Run writes. `pass_env`: names of this environment's
      variables to forward.
    - `packager`: "git" (default) archives the current directory's repository at HEAD into the
      job directory (the container's working directory is /nemo_run/code) and refuses
      uncommitted or untracked files unless `allow_dirty=True`; "none" packages nothing.
    - `docker_host`: the engine's socket (e.g. unix:///run/docker.sock); default $DOCKER_HOST
      or Docker's default.
    - `retries`: restart a failed container up to this many times (Docker's on-failure policy).
    - `user`: UID[:GID] the container runs as (default: this process's uid:gid).
    """
    if not container_image:
        raise ExecutorError("the docker executor needs an image: set "
                            "run.executor.container_image=NAME:TAG on the command line, or "
                            "executors.docker(container_image=...) in Python.")
    if not _IMAGE.match(str(container_image)):
        raise ExecutorError(f"invalid image reference {container_image!r}: use "
                            "[REGISTRY/]NAME[:TAG] in lower case (or NAME@sha256:DIGEST).")
    if int(ntasks_per_node) < 1:
        raise ExecutorError(f"ntasks_per_node must be >= 1 (got {ntasks_per_node}).")
    if shm_size is not None and not _SIZE.match(str(shm_size)):
        raise ExecutorError(f"shm_size {shm_size!r}: write a size such as 512m or 8g.")
    if network == "bridge":
        raise ExecutorError("network='bridge' is Docker's predefined network, which NeMo-Run "
                            "cannot create: keep the default (a user-defined bridge, "
                            f"'{NETWORK}'), or use 'host' or 'none'.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(network)):
        raise ExecutorError(f"invalid network name {network!r}.")
    if packager not in ("git", "none"):
        raise ExecutorError(f"unknown packager {packager!r}: choose one of git, none.")
    mounts = [check_volume(v) for v in (volumes or [])]
    plain, secrets = safety.split_secrets(env_vars)
    safety.check_env_names(pass_env or [], "pass_env")
    gpus = gpus_on_this_machine() and -1 if num_gpus is None else int(num_gpus)
    user = str(user) if user is not None else f"{os.getuid()}:{os.getgid()}"
    if not re.fullmatch(r"\d+(:\d+)?", user):
        raise ExecutorError(f"user {user!r}: write a numeric UID or UID:GID.")
    if not user.startswith("0") and "HOME" not in plain:
        plain["HOME"] = "/tmp"  # a uid without a home in the image

    pack = make_packager(packager, allow_dirty)
    executor = run.DockerExecutor(
        container_image=str(container_image),
        ntasks_per_node=int(ntasks_per_node),
        num_gpus=gpus or None,
        shm_size=shm_size,
        ipc_mode=ipc_mode,
        ulimits=list(ulimits or []),
        network=str(network),
        volumes=mounts,
        env_vars=plain,
        packager=pack,
        retries=int(retries),
        launcher="torchrun",
        privileged=False,
        # unprivileged: no capabilities, no setuid escalation (docker-py keyword arguments)
        additional_kwargs={"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
                           "user": user},
    )
    setattr(executor, SECRETS_ATTR, secrets)
    setattr(executor, OPTIONS_ATTR, (packager, allow_dirty, list(pass_env or [])))
    setattr(executor, DOCKER_HOST_ATTR, docker_host)
    return executor


# --- checks before a launch ----------------------------------------------------------------

def engine_environment(executor: Any) -> dict[str, str]:
    """Environment for NeMo-Run's Docker client (docker.from_env): DOCKER_HOST if given."""
    host = getattr(executor, DOCKER_HOST_ATTR, None)
    return {"DOCKER_HOST": host} if host else {}


def check_engine(executor: run.DockerExecutor, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Raise ExecutorError unless the engine answers and has (or can pull) the image."""
    import docker
    from docker.errors import DockerException, ImageNotFound

    env = {**os.environ, **engine_environment(executor)}
    where = env.get("DOCKER_HOST") or "Docker's default socket (unix:///var/run/docker.sock)"
    try:
        client = docker.from_env(environment=env, timeout=int(timeout))
        client.ping()
    except DockerException as error:
        reason = " ".join(str(error).split())[:200]
        raise ExecutorError(
            f"the Docker daemon is not reachable at {where} ({reason}): start dockerd, or point "
            "DOCKER_HOST / run.executor.docker_host at its socket.") from None
    image = executor.container_image
    try:
        client.images.get(image)
        return
    except ImageNotFound:
        pass
    try:  # not local: would a pull find it? (a manifest lookup, nothing downloaded)
        client.images.get_registry_data(image)
    except DockerException as error:
        reason = " ".join(str(error).split())[:200]
        raise ExecutorError(
            f"image {image!r} is not in the engine's image store and cannot be pulled "
            f"({reason}): build or load it first (docker build / docker load / docker import), "
            "or fix run.executor.container_image.") from None


def preflight(executor: run.DockerExecutor, timeout: float = PREFLIGHT_TIMEOUT) -> None:
    """Everything that can be checked before a container starts, cheapest first."""
    check_code(executor)
    check_engine(executor, timeout)


def write_secrets(executor: run.DockerExecutor, secrets: dict[str, str]) -> Optional[str]:
    """Secrets -> a mode-600 file in a private directory mounted read-only in the container,
    whose path the job learns from NEMO_LITE_SECRETS_FILE. Returns the host directory, which
    the caller removes when the run ends."""
    if not secrets:
        return None
    import tempfile

    directory = tempfile.mkdtemp(prefix="nemo_lite_secrets_")  # mode 700
    path = os.path.join(directory, "secrets.env")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{line}\n" for line in safety.export_lines(secrets))
    executor.volumes.append(f"{directory}:{SECRETS_MOUNT}:ro")
    executor.env_vars["NEMO_LITE_SECRETS_FILE"] = f"{SECRETS_MOUNT}/secrets.env"
    return directory


def state_from_status_file(job_dir: str, wait: float = 10.0) -> Optional[str]:
    """SUCCEEDED / FAILED from the exit code NeMo-Run's container command writes to
    status_*.out in the job directory (None when there is none after `wait` seconds)."""
    import glob
    import json
    import time

    deadline = time.monotonic() + wait
    while True:
        for path in glob.glob(os.path.join(job_dir, "status_*.out")):
            try:
                with open(path) as f:
                    code = int(json.load(f)["exit_code"])
            except (OSError, ValueError, KeyError):
                continue
            return "SUCCEEDED" if code == 0 else "FAILED"
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)
