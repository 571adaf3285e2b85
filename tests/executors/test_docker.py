"""The executors on a real Docker engine (dockerd started by tests/infra/docker/start.sh, image
built locally by build_image.sh): real containers, state from the engine."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._support.jobs import experiment_job_dir, git_repo, nemo_cli, step_losses
from tests._support.wall_times import record as record_wall_time

pytestmark = pytest.mark.distributed




def test_cli_pretrains_tiny_gpt_on_two_ranks_in_a_container(docker_engine, docker_env, tmp_path,
                                                            record_property):
    """`nemo llm pretrain --factory tiny_gpt run.executor=docker ...` from a git repository: the
    git packager archives it into the job directory, torchrun starts 2 ranks in the container."""
    repo = git_repo(tmp_path / "project")
    start = time.monotonic()
    proc = nemo_cli("llm", "pretrain", "--factory", "tiny_gpt", "run.executor=docker",
                 f"run.executor.container_image={docker_engine['image']}",
                 "run.executor.ntasks_per_node=2", "run.name=tiny", "trainer.max_steps=10", "-y",
                 env=docker_env, cwd=repo)
    record_wall_time(record_property, "docker: nemo llm pretrain tiny_gpt, 2 ranks, 10 steps (CLI to exit)",
                    time.monotonic() - start)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_dir = experiment_job_dir(docker_env, "tiny")
    assert (job_dir / "code" / "README.md").exists()  # the git archive is the working directory
    run_dir = job_dir / "code" / "nemo_experiments" / "default"
    assert (run_dir / "checkpoints" / "step=10-consumed_samples=80" / "nemo_lite.json").exists()
    assert (run_dir / "nemo_log_globalrank-1_localrank-1.txt").exists()  # two ranks ran
    logs = list(job_dir.glob("log_*.out"))
    assert len(logs) == 1, logs
    losses = step_losses(logs[0].read_text())
    assert sorted(losses) == list(range(1, 11)) and losses[10] < losses[1] - 0.1, losses
    assert "step 10/10" in proc.stdout  # logs were shown live
    status = json.loads(next(job_dir.glob("status_*.out")).read_text())
    assert status["exit_code"] == "0"


CHECK = r"""
import os, sys
from nemo_lite.secrets import load_secrets_file

print("caps", [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
mounts = sorted({l.split()[4] for l in open("/proc/self/mountinfo")
                 if l.split()[4].startswith(("/data", "/nemo_run", "/work", "/root", "/tmp"))})
print("mounts", mounts)
print("value=[" + os.environ["NL_VALUE"] + "]")
names = load_secrets_file()
token = os.environ.get("HF_TOKEN", "")
import hashlib
print("secrets", names, hashlib.sha256(token.encode()).hexdigest()[:16])
sys.exit(int(os.environ.get("NL_EXIT", "0")))
"""

NASTY = """a b "dq" 'sq' $(touch MARKER) `touch MARKER`; touch MARKER"""


def test_containers_are_unprivileged_see_only_their_volumes_and_get_values_as_data(
        docker_engine, docker_env, tmp_path):
    """Capabilities (none), mounts (the job directory and the one volume asked for), a value
    with shell syntax arriving unchanged, a secret reaching the job but no file NeMo-Run keeps;
    then the same container exiting 3 is FAILED and run_and_wait raises JobFailed."""
    data = tmp_path / "data"
    data.mkdir()
    marker = tmp_path / "pwned"
    nasty = NASTY.replace("MARKER", str(marker))
    repo = git_repo(tmp_path / "project", {"check.py": CHECK})
    secret = "s3cr3t-9c1e77"
    script = f"""
import os, sys
import nemo_run as run
import executors

if __name__ == "__main__":
    for code in (0, 3):
        executor = executors.docker(container_image="{docker_engine['image']}",
                                    volumes=["{data}:/data:ro"],
                                    env_vars={{"NL_VALUE": os.environ["NL_NASTY"],
                                               "NL_EXIT": str(code),
                                               "HF_TOKEN": os.environ["NL_SECRET"]}})
        try:
            result = executors.run_and_wait(run.Script(path="check.py", entrypoint="python"),
                                            executor, name=f"check-{{code}}")
            print("RESULT", result.state)
        except executors.JobFailed as failure:
            print("JOBFAILED", failure.result.state)
            sys.exit(1)
"""
    env = {**docker_env, "NL_NASTY": nasty, "NL_SECRET": secret}
    (tmp_path / "launch.py").write_text(script)  # outside the repository the job archives
    proc = subprocess.run([sys.executable, str(tmp_path / "launch.py")], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=400)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert "RESULT SUCCEEDED" in out and "JOBFAILED FAILED" in out, proc.stdout[-4000:]
    log = next(experiment_job_dir(env, "check-0").glob("log_*.out")).read_text()
    assert "caps 0000000000000000" in log, log
    mounts = re.search(r"mounts (\[.*\])", log)[1]
    assert mounts == "['/data', '/nemo_run']", mounts
    assert f"value=[{nasty}]" in log and not marker.exists()
    assert f"secrets ['HF_TOKEN'] {hashlib.sha256(secret.encode()).hexdigest()[:16]}" in log
    for path in Path(env["NEMORUN_HOME"]).rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in out
    failed = experiment_job_dir(env, "check-3")
    assert json.loads(next(failed.glob("status_*.out")).read_text())["exit_code"] != "0"
    # torchrun exits 1 for a failed rank and reports the rank's own exit code
    assert re.search(r"exitcode\s*:\s*3", next(failed.glob("log_*.out")).read_text())


def test_bad_input_fails_before_anything_starts(docker_engine, docker_env, tmp_path):
    repo = git_repo(tmp_path / "project")
    common = ["llm", "pretrain", "--factory", "tiny_gpt", "run.executor=docker",
              "run.executor.ntasks_per_node=2", "-y"]
    cases = {
        "no image": ([], "needs an image"),
        "missing image": (["run.executor.container_image=nemo-lite:does-not-exist"],
                          "is not in the engine's image store and cannot be pulled"),
        "no daemon": ([f"run.executor.container_image={docker_engine['image']}",
                       f"run.executor.docker_host=unix://{tmp_path}/no.sock"],
                      "Docker daemon is not reachable"),
        "bad volume": ([f"run.executor.container_image={docker_engine['image']}",
                        "run.executor.volumes=['/does/not/exist:/data']"], "does not exist"),
        "bridge": ([f"run.executor.container_image={docker_engine['image']}",
                    "run.executor.network=bridge"], "Docker's predefined network"),
    }
    before = subprocess.run(["docker", "ps", "-aq"], env=docker_env, capture_output=True,
                            text=True).stdout
    for what, (args, message) in cases.items():
        proc = nemo_cli(*common, *args, env=docker_env, cwd=repo, timeout=120)
        assert proc.returncode != 0, what
        assert message in proc.stderr, (what, proc.stderr[-2000:])
    (repo / "untracked.py").write_text("x = 1\n")
    proc = nemo_cli(*common, f"run.executor.container_image={docker_engine['image']}",
                 env=docker_env, cwd=repo, timeout=120)
    assert proc.returncode != 0 and "uncommitted or untracked files" in proc.stderr
    after = subprocess.run(["docker", "ps", "-aq"], env=docker_env, capture_output=True,
                           text=True).stdout
    assert after == before  # no container was created
    assert not (Path(docker_env["NEMORUN_HOME"]) / "experiments").exists()
