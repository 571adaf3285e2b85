"""A run killed with SIGKILL, or stopped by a scheduler's signal, resumes, with the same
command, exactly where it would have been.

Two ranks, DP2 with the distributed optimizer and dropout 0.1 (so the RNG state matters),
8 steps, a checkpoint every 2 steps. The reference runs uninterrupted. One copy is killed
mid-training (after its step-4 checkpoint), another while its step-6 checkpoint is being
committed; each is restarted with the same command and must reproduce the reference's
per-step losses (fp32, 1e-6 relative) from the checkpoint on. Three more get a preemption
signal during step 5 (SIGTERM to torchrun, SIGUSR1 to rank 1 only, SIGTERM to the process that
Lightning's launcher runs as rank 0): each checkpoints step 5, which no interval would save,
and exits with code 75; restarted together, all three continue with the reference's losses.
One more runs under `torchrun --max-restarts 1`: rank 1 is killed, torchrun restarts both ranks
in the same job, and they finish with the reference's losses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._support.ranks import SCRIPTS, read_losses, run_checkpointed

pytestmark = pytest.mark.distributed

STEPS = 8


def run_spec(work: Path, name: str, **extra) -> dict:
    return {"name": name, "steps": STEPS, "save_every": 2, "keep": 2, "dist_opt": True,
            "dropout": 0.1, "run_dir": str(work / name), "losses": str(work / f"{name}.jsonl"),
            "resume": "if_exists", **extra}


def start(work: Path, run: dict, output: Path | None = None,
          max_restarts: int = 0) -> subprocess.Popen:
    """torchrun with 2 ranks on `run`; its output to `output` (default: discarded).
    `max_restarts` reaches torchrun as PET_MAX_RESTARTS, as executors.torchrun(max_restarts=)
    passes it."""
    spec = work / f"spec_{run['name']}_{time.monotonic_ns()}.json"
    spec.write_text(json.dumps({"runs": [run]}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           str(SCRIPTS / "ckpt_run.py"), str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PET_MAX_RESTARTS": str(max_restarts)}
    out = output.open("w") if output else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if output
                            else subprocess.DEVNULL, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never reached the point to kill it"
            time.sleep(0.05)
    finally:
        kill_tree(proc)
        proc.wait(timeout=30)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its ranks (torchrun starts each rank in a session of its own, so
    killing torchrun's process group alone would leave them running)."""
    import psutil

    try:
        ranks = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        ranks = []
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for rank in ranks:
        try:
            rank.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(ranks, timeout=30)


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def resumed_from(run_dir: Path) -> str:
    log = (run_dir / "nemo_log_globalrank-0_localrank-0.txt").read_text()
    return re.findall(r"resuming from checkpoint (\S+)", log)[-1].rsplit("/", 1)[-1]


def assert_kept_checkpoints(run_dir: Path, resumed_from: str | None = None) -> None:
    """Keep-last-2 after the restart, nothing incomplete left; Lightning never deletes the
    checkpoint a run resumed from, so that one may remain as well."""
    left = set(checkpoints(run_dir)) - {resumed_from}
    assert left == {"last", "step=6-consumed_samples=48", "step=8-consumed_samples=64"}, left
    assert (run_dir / "checkpoints" / "last").resolve().name == "step=8-consumed_samples=64"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("resume")
    run_checkpointed(2, [run_spec(work, "reference")], work, "reference")
    return work


def test_killed_mid_training_resumes_with_identical_losses(work):
    run = run_spec(work, "killed", pause_after_step=5)
    losses = Path(run["losses"])
    proc = start(work, run)
    kill_when(proc, lambda: losses.exists() and 5 in read_losses(losses))
    assert proc.returncode != 0
    before = checkpoints(Path(run["run_dir"]))
    assert "step=4-consumed_samples=32" in before and "step=6-consumed_samples=48" not in before

    run["pause_after_step"] = None  # the same run, restarted

    run_checkpointed(2, [run], work, "killed-restart")
    reference = read_losses(work / "reference.jsonl")
    resumed = read_losses(losses)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(5, STEPS + 1):
        assert abs(resumed[step] - reference[step]) <= 1e-6 * abs(reference[step]), (
            step, resumed, reference)
    assert resumed_from(Path(run["run_dir"])) == "step=4-consumed_samples=32"
    assert_kept_checkpoints(Path(run["run_dir"]), "step=4-consumed_samples=32")


def test_torchrun_restarts_a_killed_rank_in_the_same_job_and_it_resumes_exactly(work, tmp_path):
    """`--max-restarts 1` (PET_MAX_RESTARTS): rank 1 is killed after step 5; torchrun restarts
    both ranks in the same job, they resume from the step-4 checkpoint and finish with the
    reference's losses; the job exits 0."""
    import psutil

    run = run_spec(work, "restarted-in-job", step_delay=0.5)
    losses = Path(run["losses"])
    log = tmp_path / "torchrun.log"
    proc = start(work, run, output=log, max_restarts=1)
    deadline = time.monotonic() + 240
    while not (losses.exists() and 5 in read_losses(losses)):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    rank1 = next(c for c in psutil.Process(proc.pid).children()
                 if c.environ().get("LOCAL_RANK") == "1")
    rank1.kill()
    try:
        assert proc.wait(timeout=300) == 0, log.read_text()[-5000:]
    finally:
        kill_tree(proc)
    output = log.read_text()
    assert "Restored all states from the checkpoint at" in output and "step=4-" in output
    reference = read_losses(work / "reference.jsonl")
    resumed = read_losses(losses)  # the second round's steps overwrite the first's
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert abs(resumed[step] - reference[step]) <= 1e-6 * abs(reference[step]), (
            step, resumed, reference)


def test_killed_during_checkpoint_save_resumes_from_the_previous_one(work):
    run = run_spec(work, "killed-saving", slow_commit_at_step=6, marker=str(work / "saving"))
    proc = start(work, run)
    kill_when(proc, lambda: (work / "saving").exists())
    run_dir = Path(run["run_dir"])
    left = checkpoints(run_dir)
    assert "step=6-consumed_samples=48.incomplete" in left, left
    assert "step=6-consumed_samples=48" not in left, left
    (work / "saving").unlink()

    run["slow_commit_at_step"] = None  # the same run, restarted
    run_checkpointed(2, [run], work, "saving-restart")
    assert resumed_from(run_dir) == "step=4-consumed_samples=32"
    reference = read_losses(work / "reference.jsonl")
    resumed = read_losses(run["losses"])
    for step in range(5, STEPS + 1):
        assert abs(resumed[step] - reference[step]) <= 1e-6 * abs(reference[step]), (
            step, resumed, reference)
    assert_kept_checkpoints(run_dir, resumed_from="step=4-consumed_samples=32")


PREEMPTIONS = {"torchrun-SIGTERM": ("torchrun", signal.SIGTERM),
               "rank1-SIGUSR1": ("rank 1", signal.SIGUSR1),
               "lightning-SIGTERM": ("lightning rank 0", signal.SIGTERM)}


def test_a_preemption_signal_checkpoints_the_agreed_step_exits_75_and_resumes(work, tmp_path):
    """The three jobs run at once; each gets its signal while it sleeps after step 5."""
    import psutil

    from nemo_lite.lightning.preemption import PREEMPTED_EXIT_CODE

    jobs = {}
    for name, (target, _) in PREEMPTIONS.items():
        run = run_spec(work, name, step_delay=2.0)  # a slow step 5 for the signal to land in
        log = tmp_path / f"{name}.log"
        if target == "lightning rank 0":  # no torchrun: Lightning's launcher starts rank 1
            spec = work / f"spec_{name}.json"
            spec.write_text(json.dumps({"runs": [{**run, "devices": 2}]}))
            proc = subprocess.Popen(
                [sys.executable, str(SCRIPTS / "ckpt_run.py"), str(spec)], stdout=log.open("w"),
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
        else:
            proc = start(work, run, output=log)
        jobs[name] = (run, proc, log)
    sent: dict[str, float] = {}
    deadline = time.monotonic() + 300
    while len(sent) < len(jobs):
        for name, (run, proc, log) in jobs.items():
            losses = Path(run["losses"])
            if name in sent:
                continue
            if not (losses.exists() and 5 in read_losses(losses)):
                assert proc.poll() is None, log.read_text()[-3000:]
                continue
            target, signum = PREEMPTIONS[name]
            receiver = proc.pid if target != "rank 1" else next(
                c.pid for c in psutil.Process(proc.pid).children()
                if c.environ().get("LOCAL_RANK") == "1")
            os.kill(receiver, signum)
            sent[name] = time.monotonic()
        assert time.monotonic() < deadline, "a job never reached step 5"
        time.sleep(0.02)
    seconds = {}
    for name, (run, proc, log) in jobs.items():
        proc.wait(timeout=60)
        seconds[name] = time.monotonic() - sent[name]
        target, signum = PREEMPTIONS[name]
        output = log.read_text()
        assert f"stopped on {signum.name}: checkpointed step 5" in output, output[-3000:]
        if target == "lightning rank 0":
            assert proc.returncode == PREEMPTED_EXIT_CODE, output[-3000:]
        elif target == "rank 1":  # torchrun reports the first rank to exit (75), exits 1
            assert f"exitcode  : {PREEMPTED_EXIT_CODE}" in output, output[-3000:]
        else:  # torchrun itself got the signal: it forwards it, waits for the ranks, exits 1
            assert proc.returncode != 0 and "got signal: 15" in output, output[-3000:]
        assert "step=5-consumed_samples=40" in checkpoints(Path(run["run_dir"]))
        run.pop("step_delay")
    print("seconds from the signal to the job's exit (3 jobs at once on 2 cores):",
          {k: round(v, 1) for k, v in seconds.items()})
    # each checkpointed within the 25 s grace period (or its timer would have exited without
    # one); the exit itself includes torchrun's shutdown, slower with 3 jobs on 2 cores
    assert max(seconds.values()) < 60
    runs = [run for run, _, _ in jobs.values()]
    run_checkpointed(2, runs, work, "preempted-restart")
    reference = read_losses(work / "reference.jsonl")
    for run in runs:
        assert resumed_from(Path(run["run_dir"])) == "step=5-consumed_samples=40"
        resumed = read_losses(run["losses"])
        assert sorted(resumed) == list(range(1, STEPS + 1))
        for step in range(6, STEPS + 1):
            assert abs(resumed[step] - reference[step]) <= 1e-6 * abs(reference[step]), (
                run["name"], step, resumed, reference)


def test_saved_context_rebuilds_the_model_config(work):
    from nemo_lite.io import load_context

    checkpoint = work / "reference" / "checkpoints" / "step=8-consumed_samples=64"
    config = load_context(checkpoint, subpath="model.config")
    assert (config.num_layers, config.hidden_size, config.seq_length) == (4, 64, 32)
    assert config.hidden_dropout == 0.1
    data = load_context(checkpoint, subpath="data")
    assert (data.global_batch_size, data.micro_batch_size) == (8, 2)
    manifest = json.loads((checkpoint / "nemo_lite.json").read_text())
    assert manifest["step"] == 8 and manifest["consumed_samples"] == 64
    assert manifest["optimizer"] == "dp_reshardable"
