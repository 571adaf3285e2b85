"""Jobs on a real two-node Slurm cluster (tests/infra/slurm/start.sh with
NEMO_LITE_SLURM_NODES=2: two slurmd, each in its own network namespace with its own address and
host name, torchrun's rendezvous across them).

One job, tiny_gpt TP2 x DP2 over 2 nodes x 2 ranks, is interrupted twice, both ways Slurm
interrupts a job: SIGUSR1 before the time limit (what the executor's `--signal=USR1@120` sends;
here `scancel --signal=USR1`, the same delivery to every process of the steps), after which rank 0
requeues the job itself; then `scontrol requeue` (what preemption does: SIGTERM, and Slurm
requeues). Its three starts' losses, step by step, equal a one-rank run's (fp32, 1e-5): the
layout over two nodes and each resume are exact. Then a node dies mid-run, and the job fails
within the RankWatchdog's bound instead of waiting on gloo. The node-death test runs last: it
leaves node n2 down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._support.jobs import (
    experiment_job_dir,
    job_ids,
    nemo_cli,
    sacct_state,
    step_losses,
    tb_losses,
)
from tests._support.wall_times import record as record_wall_time

pytestmark = pytest.mark.distributed

STEPS = 40
LAUNCH = """
import sys
import nemo_run as run
import executors
from nemo_lite import lightning as nl
from recipes import tiny_gpt

if __name__ == "__main__":
    recipe = tiny_gpt.pretrain_recipe(name="{name}", num_nodes=2)
    recipe.trainer.max_steps = {steps}
    {extra}
    executor = executors.slurm(account="{account}", partition="{partition}", nodes=2,
                               ntasks_per_node=2, packager="none")
    result = executors.run_and_wait(recipe, executor, name="{name}")
    print("RESULT", result.state, result.job_id)
"""


def launch(env: dict, cwd: Path, name: str, steps: int, extra: str = "") -> subprocess.Popen:
    (cwd / "launch.py").write_text(LAUNCH.format(
        name=name, steps=steps, extra=extra, account=env["NEMO_LITE_SLURM_ACCOUNT"],
        partition=env["NEMO_LITE_SLURM_PARTITION"]))
    return subprocess.Popen([sys.executable, "launch.py"], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def log_of(env: dict, name: str, restart: int) -> Path:
    found = list(Path(env["NEMORUN_HOME"]).glob(
        f"experiments/{name}/*/{name}/log-nemo_lite.{name}_*_{restart}.out"))
    return found[0] if found else Path("/nonexistent")


def wait_for_steps(env: dict, proc: subprocess.Popen, name: str, restart: int, steps: int) -> None:
    started = time.monotonic()
    while not (log_of(env, name, restart).exists()
               and len(step_losses(log_of(env, name, restart).read_text())) >= steps):
        if proc.poll() is not None:
            pytest.fail(f"the launcher exited before start {restart} ran {steps} steps:\n"
                        + proc.stdout.read()[-5000:])
        assert time.monotonic() - started < 300, f"start {restart} ran no {steps} steps in 300 s"
        time.sleep(0.2)


def in_namespace(net: str) -> list:
    """The processes in the network namespace `net` (as /proc/PID/ns/net reads)."""
    import psutil

    found = []
    for process in psutil.process_iter():
        try:
            if os.readlink(f"/proc/{process.pid}/ns/net") == net:
                found.append(process)
        except OSError:
            pass
    return found


def left_on_nodes(env: dict, since: float, nodes: tuple[str, ...] = ("n1", "n2")) -> list[int]:
    """Processes started after `since` (time.time()) that still run on the nodes, slurmd apart:
    what a job left behind once Slurm says it ended."""
    import psutil

    run_dir = Path(env["NEMO_LITE_SLURM_DIR"]) / "run"
    left = []
    for node in nodes:
        slurmd = int((run_dir / f"slurmd-{node}.pid").read_text())
        for process in in_namespace(os.readlink(f"/proc/{slurmd}/ns/net")):
            try:
                if process.pid != slurmd and process.create_time() >= since - 1:
                    left.append(process.pid)
            except psutil.Error:
                pass
    return left


def wait_until_clean(env: dict, since: float, limit_s: float, nodes=("n1", "n2")) -> list[str]:
    """[] once no process of the job is left on the nodes; else, after `limit_s`, the leftovers
    described."""
    deadline = time.monotonic() + limit_s
    while left := left_on_nodes(env, since, nodes):
        if time.monotonic() > deadline:
            return [_describe(pid, since) for pid in left]
        time.sleep(0.5)
    return []


def test_tp2_dp2_over_two_nodes_matches_one_rank_through_two_interruptions(
        job_env_two_nodes, tmp_path, record_property):
    env = job_env_two_nodes
    reference_dir = tmp_path / "one_rank"
    reference_dir.mkdir()
    one_rank = nemo_cli("llm", "pretrain", "--factory", "tiny_gpt", f"trainer.max_steps={STEPS}",
                        "trainer.devices=1", "trainer.strategy.tensor_model_parallel_size=1",
                        "-y", env=env, cwd=reference_dir)
    assert one_rank.returncode == 0, one_rank.stderr[-3000:]
    reference = tb_losses(reference_dir / "nemo_experiments")
    assert sorted(reference) == list(range(1, STEPS + 1))

    start, since = time.monotonic(), time.time()
    proc = launch(env, tmp_path, "two", STEPS)
    interrupted: dict[str, float] = {}
    try:
        for restart, how in enumerate((["scancel", "--signal=USR1"], ["scontrol", "requeue"])):
            wait_for_steps(env, proc, "two", restart, 3)
            (job_id,) = job_ids(env)
            subprocess.run([*how, job_id], env=env, check=True)
            interrupted[how[0]] = time.monotonic()
            while not log_of(env, "two", restart + 1).exists():  # eligible now, not in 2 min
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"],
                               env=env, capture_output=True)
                assert time.monotonic() - interrupted[how[0]] < 120, "the job did not restart"
                time.sleep(0.5)
        output, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    record_wall_time(record_property, f"slurm, 2 nodes x 2 ranks: tiny_gpt TP2 x DP2, {STEPS} "
                     "steps, interrupted twice (submit to exit)", time.monotonic() - start)
    assert proc.returncode == 0, output[-5000:]
    (job_id,) = job_ids(env)
    assert f"RESULT SUCCEEDED {job_id}" in output and sacct_state(env, job_id) == "COMPLETED"
    job_dir = experiment_job_dir(env, "two")
    script = (job_dir.parent / "two_sbatch.sh").read_text()
    assert "#SBATCH --signal=USR1@120" in script and "#SBATCH --nodes=2" in script
    logs = [log_of(env, "two", restart).read_text() for restart in range(3)]
    assert f"nemo_lite: requeued Slurm job {job_id}" in logs[0], logs[0][-3000:]
    assert "requeued Slurm job" not in logs[1]  # SIGTERM: Slurm's own requeue
    saved_steps = []
    for signum, before, after in (("SIGUSR1", logs[0], logs[1]), ("SIGTERM", logs[1], logs[2])):
        saved = re.search(rf"stopped on {signum}: checkpointed step (\d+)", before)
        assert saved, before[-3000:]
        resumed = re.search(r"Restored all states from the checkpoint at \S*step=(\d+)-", after)
        assert resumed and resumed[1] == saved[1], (saved[0], after[-3000:])
        assert min(step_losses(after)) == int(saved[1]) + 1, sorted(step_losses(after))[:5]
        saved_steps.append(int(saved[1]))
    losses = tb_losses(job_dir / "code" / "nemo_experiments" / "two")
    assert sorted(losses) == list(range(1, STEPS + 1)), sorted(losses)
    worst = max(abs(losses[s] - reference[s]) / abs(reference[s]) for s in reference)
    print(f"2 nodes x 2 ranks (TP2 x DP2) vs 1 rank, {STEPS} steps, checkpointed and resumed at "
          f"steps {saved_steps}: largest relative loss difference {worst:.2e}")
    assert worst <= 1e-5, (losses, reference)
    # three starts, two of them stopped by signals: none left a process on either node
    assert (left := wait_until_clean(env, since, 30)) == [], f"left on the nodes: {left}"


def test_a_dead_node_fails_the_job_within_the_watchdog_bound(job_env_two_nodes, tmp_path,
                                                              record_property):
    """Node n2 dies mid-run: its link goes down (no packet answers, as with a dead host) and
    every process in its namespace, slurmd too, is killed. The ranks on n1 wait in a gloo
    collective that would take 30 minutes to time out; RankWatchdog(timeout_s=15) names the
    silent ranks and ends the job."""
    import psutil

    env = job_env_two_nodes
    timeout_s = 15
    since = time.time()
    proc = launch(env, tmp_path, "node_death", 100000,
                  extra=f"recipe.trainer.callbacks = [run.Config(nl.RankWatchdog, "
                        f"timeout_s={timeout_s})]")
    try:
        wait_for_steps(env, proc, "node_death", 0, 3)
        directory = Path(env["NEMO_LITE_SLURM_DIR"])
        anchor = (directory / "run" / "anchor.pid").read_text().strip()
        n2 = os.readlink(f"/proc/{(directory / 'run' / 'slurmd-n2.pid').read_text().strip()}/ns/net")
        subprocess.run(["nsenter", "-t", anchor, "--net", "ip", "link", "set", "veth2", "down"],
                       check=True)
        killed = 0
        for process in in_namespace(n2):
            try:
                process.kill()
                killed += 1
            except psutil.Error:
                pass
        died = time.monotonic()
        (job_id,) = job_ids(env)
        log = log_of(env, "node_death", 0)
        while "job hung: no heartbeat" not in log.read_text():
            assert time.monotonic() - died < timeout_s + 60, log.read_text()[-3000:]
            time.sleep(0.2)
        reported = time.monotonic() - died
        # Slurm's part: the node is DOWN after SlurmdTimeout (20 s in the test cluster) and the
        # job, waiting in srun for the dead node's task, is requeued (it then waits for n2)
        while subprocess.run(["squeue", "-h", "-j", job_id, "-t", "RUNNING"], env=env,
                             capture_output=True, text=True).stdout.strip():
            assert time.monotonic() - died < 180, "the job still runs 180 s after the node died"
            time.sleep(0.5)
        ended = time.monotonic() - died
        # and on n1 every process of the job ends (Slurm's SIGKILL follows after KillWait, 30 s)
        left = wait_until_clean(env, since, 60, nodes=("n1",))
        cleaned = time.monotonic() - died
        subprocess.run(["scancel", job_id], env=env, check=True)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    hung = re.search(r"nemo_lite: job hung: no heartbeat .*", text)
    print(f"node n2 killed ({killed} processes): hang reported after {reported:.1f} s, job out "
          f"of RUNNING after {ended:.1f} s, n1 clean after {cleaned:.1f} s (watchdog timeout "
          f"{timeout_s} s): {hung[0]}")
    record_wall_time(record_property, "slurm, 2 nodes: node death to the hang report",
                     reported)
    assert killed >= 3  # slurmd, slurmstepd, torchrun and its two ranks
    assert hung and "rank 2 (" in hung[0] and "rank 3 (" in hung[0], text[-3000:]
    assert reported < timeout_s + 30
    # (torchrun on n1 may print its failure summary or not: Slurm's requeue can SIGTERM it first)
    assert left == [], (f"processes of the job left on n1: {left}; the job's own lines:\n"
                        + "\n".join(line for line in text.splitlines()
                                    if "nemo_lite" in line or "torch" in line)[-4000:])
    assert proc.returncode != 0 and "RESULT SUCCEEDED" not in output


def _describe(pid: int, since: float) -> str:
    """A leftover process: its command, its parent, when it started (seconds after `since`)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return (f"{pid} (parent {process.ppid()}, started at +{process.create_time() - since:.1f} "
                "s): " + " ".join(process.cmdline()))
    except psutil.Error as error:
        return f"{pid}: {error}"
