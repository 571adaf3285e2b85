"""The executors on a real one-node Slurm cluster (slurmctld + slurmd + slurmdbd, started once
per session by tests/infra/slurm/start.sh): real sbatch submissions, state from sacct."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests._support.jobs import (
    experiment_job_dir,
    git_repo,
    job_ids,
    jobs_named,
    nemo_cli,
    run_python,
    sacct_state,
    slurm_args,
    step_losses,
)
from tests._support.wall_times import record as record_wall_time

pytestmark = pytest.mark.distributed




def test_cli_pretrains_tiny_gpt_on_two_ranks_through_slurm(job_env, tmp_path, record_property):
    """`nemo llm pretrain --factory tiny_gpt run.executor=slurm ...` from a git repository: the
    default git packager archives it, sbatch runs torchrun with 2 ranks, sacct says COMPLETED."""
    repo = git_repo(tmp_path / "project")
    start = time.monotonic()
    proc = nemo_cli("llm", "pretrain", "--factory", "tiny_gpt", "run.executor=slurm",
                 *slurm_args(job_env), "run.executor.ntasks_per_node=2", "run.name=tiny",
                 "trainer.max_steps=10", "-y", env=job_env, cwd=repo)
    record_wall_time(record_property, "slurm: nemo llm pretrain tiny_gpt, 2 ranks, 10 steps (CLI to exit)",
                    time.monotonic() - start)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (job_id,) = job_ids(job_env)
    assert sacct_state(job_env, job_id) == "COMPLETED"
    assert f"{job_id}|nemo_lite.tiny" in jobs_named(job_env, "tiny")  # as the bad-input test looks
    job_dir = experiment_job_dir(job_env, "tiny")
    assert (job_dir / "code" / "README.md").exists()  # the git archive is the working directory
    run_dir = job_dir / "code" / "nemo_experiments" / "default"
    assert (run_dir / "checkpoints" / "step=10-consumed_samples=80" / "nemo_lite.json").exists()
    assert (run_dir / "nemo_log_globalrank-1_localrank-1.txt").exists()  # two ranks ran
    losses = step_losses((job_dir / f"log-nemo_lite.tiny_{job_id}_0.out").read_text())
    assert sorted(losses) == list(range(1, 11)) and losses[10] < losses[1] - 0.1, losses
    assert "step 10/10" in proc.stdout  # logs were shown live


def test_a_failed_job_raises_and_the_cli_exits_1(job_env, tmp_path):
    """NeMo-Run alone exits 0 for a FAILED job; run_and_wait raises JobFailed, the CLI exits 1."""
    script = f"""
import sys
import nemo_run as run
import executors

if __name__ == "__main__":
    executor = executors.slurm(account="{job_env['NEMO_LITE_SLURM_ACCOUNT']}",
                               partition="{job_env['NEMO_LITE_SLURM_PARTITION']}",
                               launcher=None, packager="none")
    try:
        executors.run_and_wait(run.Script(inline="echo about to fail; exit 3"), executor,
                               name="fails")
    except executors.JobFailed as failure:
        print("JOBFAILED", failure.result.state, failure.result.job_id)
        sys.exit(1)
"""
    proc = run_python(script, job_env, tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    match = re.search(r"JOBFAILED (\w+) (\d+)", proc.stdout)
    assert match and match[1] == "FAILED", proc.stdout[-3000:]
    assert sacct_state(job_env, match[2]) == "FAILED"
    assert "about to fail" in proc.stdout + proc.stderr  # the job's log was shown

    # the CLI: the job's script fails before the recipe starts (setup_lines)
    proc = nemo_cli("llm", "pretrain", "--factory", "tiny_gpt", "run.executor=slurm",
                 *slurm_args(job_env), "run.executor.ntasks_per_node=2",
                 "run.executor.packager=none", "run.executor.setup_lines='exit 7'",
                 "run.name=failing", "-y", env=job_env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: job 'failing'") and "FAILED" in last, last
    assert sacct_state(job_env, job_ids(job_env)[-1]) == "FAILED"


NASTY = """a b "dq" 'sq' $(touch MARKER) `touch MARKER`; touch MARKER /nemo_run/x"""


def test_names_and_values_reach_the_job_as_data_and_secrets_stay_out_of_files(job_env, tmp_path):
    marker = tmp_path / "pwned"
    nasty = NASTY.replace("MARKER", str(marker))
    env = {**job_env, "NL_NASTY": nasty, "NL_SECRET_VALUE": "s3cr3t-4a7f19"}
    script = f"""
import os
import nemo_run as run
import executors

if __name__ == "__main__":
    nasty = os.environ["NL_NASTY"]
    task = run.Script(inline='echo "name=[$NEMO_LITE_JOB_NAME]"; echo "value=[$NL_VALUE]"; '
                             'echo "secret_sha=$(printf %s "$HF_TOKEN" | sha256sum | cut -c1-16)"')
    executor = executors.slurm(account="{job_env['NEMO_LITE_SLURM_ACCOUNT']}",
                               partition="{job_env['NEMO_LITE_SLURM_PARTITION']}",
                               launcher=None, packager="none",
                               env_vars={{"NL_VALUE": nasty,
                                          "HF_TOKEN": os.environ["NL_SECRET_VALUE"]}})
    result = executors.run_and_wait(task, executor, name=nasty)
    print("RESULT", result.state, result.job_id)
"""
    proc = run_python(script, env, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not marker.exists()
    assert f"name=[{nasty}]" in proc.stdout and f"value=[{nasty}]" in proc.stdout
    import hashlib

    assert f"secret_sha={hashlib.sha256(b's3cr3t-4a7f19').hexdigest()[:16]}" in proc.stdout
    job_id = re.search(r"RESULT SUCCEEDED (\d+)", proc.stdout)[1]
    comment = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "Comment", "-j", job_id],
                             env=env, capture_output=True, text=True).stdout.strip()
    assert comment in ("", nasty)  # sacct keeps the comment when AccountingStoreFlags has it
    for path in Path(env["NEMORUN_HOME"]).rglob("*"):
        if path.is_file():
            assert b"s3cr3t-4a7f19" not in path.read_bytes(), path
    assert "s3cr3t-4a7f19" not in proc.stdout + proc.stderr
    assert not marker.exists()


def test_bad_input_fails_before_anything_is_submitted(job_env, tmp_path):
    # the CLI: unknown executor, missing partition, an unreachable slurmctld
    bad_conf = tmp_path / "slurm.conf"
    text = Path(job_env["SLURM_CONF"]).read_text()
    bad_conf.write_text(re.sub(r"^SlurmctldPort=\d+", "SlurmctldPort=9", text, flags=re.M))
    cases = [
        (["run.executor=slurmx"], job_env,
         "unknown executor 'slurmx'. Did you mean 'slurm'? Known executors: local, torchrun, slurm, docker."),
        (["run.executor=slurm", f"run.executor.account={job_env['NEMO_LITE_SLURM_ACCOUNT']}"],
         job_env, "the slurm executor needs partition: set run.executor.partition=NAME"),
        (["run.executor=slurm", *slurm_args(job_env), "run.executor.ntasks_per_node=2",
          "run.executor.packager=none"], {**job_env, "SLURM_CONF": str(bad_conf)},
         "slurmctld is not reachable on this machine"),
        (["run.executor=slurm", "run.executor.account=nobody_has_this", "run.executor.partition="
          f"{job_env['NEMO_LITE_SLURM_PARTITION']}", "run.executor.ntasks_per_node=2",
          "run.executor.packager=none"], job_env, "Slurm refuses this job (allocation failure: "
         "Invalid account or account/partition combination specified)"),
    ]
    for args, env, words in cases:
        proc = nemo_cli("llm", "pretrain", "--factory", "tiny_gpt", *args, "run.name=bad_probe",
                        "-y", env=env, cwd=tmp_path)
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        assert proc.returncode == 2 and last.startswith("error: ") and words in last, (
            args, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert not (Path(job_env["NEMORUN_HOME"]) / "experiments").exists()
    # nothing reached Slurm (other tests' jobs run on the same cluster meanwhile: count by name)
    assert jobs_named(job_env, "bad_probe") == []
