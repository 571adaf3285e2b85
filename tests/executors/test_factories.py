"""The executor factories and their safety rules, without a cluster (no processes but bash/git)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nemo_run as run
import pytest

import executors
from executors import safety
from executors.slurm import SECRETS_ATTR, check_code


def test_factories_return_configs_that_build_nemo_run_executors():
    local = executors.build(executors.local())
    assert isinstance(local, run.LocalExecutor) and local.launcher is None
    assert local.ntasks_per_node == 1
    torchrun = executors.build(executors.torchrun(ntasks_per_node=2))
    assert torchrun.launcher == "torchrun" and torchrun.nproc_per_node() == 2
    config = executors.slurm(account="acct", partition="debug")
    assert isinstance(config, run.Config)
    config.ntasks_per_node = 2  # fields stay overridable, as on the command line
    slurm = executors.build(config)
    assert isinstance(slurm, run.SlurmExecutor) and slurm.ntasks_per_node == 2
    assert isinstance(slurm.tunnel, run.LocalTunnel) and slurm.tunnel.job_dir == ""
    assert isinstance(slurm.packager, run.GitArchivePackager)
    assert slurm.packager.check_uncommitted_changes and slurm.packager.check_untracked_files
    assert executors.names() == ["local", "torchrun", "slurm", "docker"]
    assert isinstance(executors.get("torchrun", ntasks_per_node=4), run.Config)
    # resilience: torchrun's --max-restarts (PET_MAX_RESTARTS), Slurm's signal before the limit
    assert "PET_MAX_RESTARTS" not in torchrun.env_vars
    assert executors.build(executors.torchrun(max_restarts=2)).env_vars["PET_MAX_RESTARTS"] == "2"
    assert slurm.signal == "USR1@120"
    assert "export PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" in slurm.setup_lines
    restarted = executors.build(executors.slurm(account="a", partition="p", max_restarts=3,
                                                signal_before_limit_s=None))
    assert "export PET_MAX_RESTARTS=3" in restarted.setup_lines and restarted.signal is None
    assert "PET_SIGNALS_TO_HANDLE" not in restarted.setup_lines


def test_docker_factory_builds_an_unprivileged_executor(tmp_path):
    config = executors.docker(container_image="nemo-lite:1", volumes=[f"{tmp_path}:/data:ro"],
                              env_vars={"A": "1", "WANDB_API_KEY": "k"})
    config.ntasks_per_node = 2
    docker = executors.build(config)
    assert isinstance(docker, run.DockerExecutor) and docker.nproc_per_node() == 2
    assert docker.launcher == "torchrun" and docker.network == "nemo_lite"
    assert docker.volumes == [f"{tmp_path}:/data:ro"]
    assert not docker.privileged and docker.additional_kwargs["cap_drop"] == ["ALL"]
    assert "no-new-privileges" in docker.additional_kwargs["security_opt"]
    assert docker.env_vars["A"] == "1" and "WANDB_API_KEY" not in docker.env_vars  # secret aside
    assert getattr(docker, SECRETS_ATTR) == {"WANDB_API_KEY": "k"}
    assert isinstance(docker.packager, run.GitArchivePackager)


@pytest.mark.parametrize("fields, words", [
    ({}, "needs an image: set run.executor.container_image"),
    ({"container_image": "Bad Image"}, "invalid image reference"),
    ({"container_image": "i", "volumes": ["/nope/missing:/data"]}, "does not exist"),
    ({"container_image": "i", "volumes": ["relative:/data"]}, "must be absolute"),
    ({"container_image": "i", "volumes": ["/tmp:/nemo_run/x"]}, "NeMo-Run mounts the job"),
    ({"container_image": "i", "network": "bridge"}, "predefined network"),
    ({"container_image": "i", "shm_size": "lots"}, "shm_size 'lots'"),
    ({"container_image": "i", "user": "root"}, "numeric UID"),
    ({"container_image": "i", "packager": "zip"}, "unknown packager 'zip'"),
])
def test_bad_docker_fields_raise_one_clear_error(fields, words):
    with pytest.raises(executors.ExecutorError, match=words):
        executors.build(executors.docker(**fields))


def test_docker_preflight_names_an_unreachable_daemon(tmp_path):
    docker = executors.build(executors.docker(container_image="i", packager="none",
                                              docker_host=f"unix://{tmp_path}/none.sock"))
    with pytest.raises(executors.ExecutorError, match="Docker daemon is not reachable at unix://"):
        executors.prepare(docker, "x")


@pytest.mark.parametrize("fields, words", [
    ({}, "needs account and partition"),
    ({"account": "a"}, "needs partition: set run.executor.partition=NAME"),
    ({"account": "a b", "partition": "p"}, "invalid Slurm account 'a b'"),
    ({"account": "a", "partition": "p", "env_vars": {"BAD-NAME": "x"}}, "invalid environment variable"),
    ({"account": "a", "partition": "p", "packager": "zip"}, "unknown packager 'zip'"),
    ({"account": "a", "partition": "p", "ssh_host": "h"}, "needs job_dir"),
    ({"account": "a", "partition": "p", "job_dir": "/x"}, "job_dir is for SSH submissions only"),
    ({"account": "a", "partition": "p", "signal_before_limit_s": 0}, "signal_before_limit_s=0: give seconds"),
    ({"account": "a", "partition": "p", "max_restarts": "x"}, "max_restarts='x': give a whole number"),
    ({"account": "a", "partition": "p", "max_restarts": 1, "launcher": None},
     "max_restarts=1 needs launcher='torchrun'"),
])
def test_bad_slurm_fields_raise_one_clear_error(fields, words):
    with pytest.raises(executors.ExecutorError, match=words) as error:
        executors.build(executors.slurm(**fields))
    assert "Fiddle context" not in str(error.value)


def test_unknown_names_and_local_with_several_ranks():
    with pytest.raises(executors.ExecutorError, match="Did you mean 'torchrun'.*local, torchrun, slurm, docker"):
        executors.check_name("torchrum")
    with pytest.raises(executors.ExecutorError, match="use run.executor=torchrun"):
        executors.build(executors.local(ntasks_per_node=2))


def test_values_are_shell_data(tmp_path):
    marker = tmp_path / "marker"
    nasty = f"""a b "c" 'd' $(touch {marker}) `touch {marker}`; touch {marker} /nemo_run/x \\ $HOME"""
    lines = safety.export_lines({"V": nasty})
    # NeMo-Run's own rewrite of "/nemo_run" must not reach the value
    script = "\n".join(lines).replace("/nemo_run", "/JOB_DIR") + '\nprintf %s "$V"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout
    assert out == nasty and not marker.exists()
    assert safety.slug(nasty) == safety.slug(safety.slug(nasty))
    assert set(safety.slug(nasty)) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def test_secrets_stay_out_of_the_executor_fields_and_its_saved_config():
    config = executors.slurm(account="a", partition="p",
                             env_vars={"WANDB_API_KEY": "k-123", "HF_TOKEN": "t-456", "MODE": "x y"})
    executor = executors.build(config)
    assert getattr(executor, SECRETS_ATTR) == {"WANDB_API_KEY": "k-123", "HF_TOKEN": "t-456"}
    from nemo_run.core.serialization.yaml import YamlSerializer

    saved = YamlSerializer().serialize(executor.to_config()) + repr(executor)
    assert "k-123" not in saved and "t-456" not in saved
    assert "export MODE='x y'" in executor.setup_lines and executor.env_vars == {}
    assert safety.redact({"HF_TOKEN": "t", "A": "b"}) == {"HF_TOKEN": "<redacted>", "A": "b"}
    local = executors.build(executors.torchrun(env_vars={"MY_SECRET": "s", "A": "b"}))
    assert local.env_vars == {"A": "b"} and getattr(local, SECRETS_ATTR) == {"MY_SECRET": "s"}


def test_plain_nemo_run_slurm_executor_with_a_secret_is_refused():
    executor = run.SlurmExecutor(account="a", partition="p", env_vars={"API_KEY": "x"})
    with pytest.raises(executors.ExecutorError, match="secret API_KEY"):
        executors.prepare(executor, "job", preflight_checks=False)


def _repo(path: Path) -> Path:
    path.mkdir()
    for cmd in (["init", "-q"], ["config", "user.email", "t@e"], ["config", "user.name", "t"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True)
    (path / "a.py").write_text("x = 1\n")
    subprocess.run(["git", "-C", str(path), "add", "a.py"], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-qm", "a"], check=True)
    return path


def test_git_packager_refuses_uncommitted_and_untracked_files(tmp_path):
    repo = _repo(tmp_path / "repo")
    executor = executors.build(executors.slurm(account="a", partition="p"))
    check_code(executor, str(repo))  # clean: fine
    (repo / "a.py").write_text("x = 2\n")
    (repo / "new.py").write_text("")
    with pytest.raises(executors.ExecutorError, match=r"uncommitted or untracked files \(a.py, new.py\)"):
        check_code(executor, str(repo))
    check_code(executors.build(executors.slurm(account="a", partition="p", allow_dirty=True)),
               str(repo))
    check_code(executors.build(executors.slurm(account="a", partition="p", packager="none")),
               str(tmp_path))
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(executors.ExecutorError, match="is not in one"):
        check_code(executor, str(outside))


def test_job_directories_that_nemo_run_would_mangle_are_refused():
    with pytest.raises(executors.ExecutorError, match="spaces or shell characters"):
        safety.check_path("job_dir", "/tmp/a b")
    with pytest.raises(executors.ExecutorError, match="contains '/nemo_run'"):
        safety.check_path("job_dir", "/tmp/nemo_run_home/experiments")
