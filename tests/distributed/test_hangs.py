"""A rank that stops fails the job within RankWatchdog's timeout, naming it; a rank that dies
leaves no process behind.

2 CPU ranks of ckpt_run.py (DP2, a checkpoint every 2 steps, so megatron's checkpoint writer
has started its multiprocessing manager and resource tracker in each rank), 0.3 s per step,
RankWatchdog(timeout_s=10). After the fault every process of the job's tree is listed: none may
be left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._support.ranks import SCRIPTS, read_losses

pytestmark = pytest.mark.distributed

TIMEOUT = 10


def launch(tmp_path: Path, launcher: str, **extra) -> tuple[subprocess.Popen, Path, Path]:
    run = {"name": launcher, "steps": 200, "save_every": 2, "keep": 2, "dist_opt": True,
           "run_dir": str(tmp_path / launcher), "losses": str(tmp_path / f"{launcher}.jsonl"),
           "step_delay": 0.3, "watchdog_timeout": TIMEOUT,
           **({"devices": 2} if launcher == "lightning" else {}), **extra}
    spec = tmp_path / f"spec_{launcher}.json"
    spec.write_text(json.dumps({"runs": [run]}))
    head = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
             "--standalone"] if launcher == "torchrun" else [sys.executable])
    log = tmp_path / f"{launcher}.log"
    proc = subprocess.Popen([*head, str(SCRIPTS / "ckpt_run.py"), str(spec)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1",
                                 "PYTHONWARNINGS": "ignore"})
    losses, deadline = Path(run["losses"]), time.monotonic() + 240
    while not (losses.exists() and 4 in read_losses(losses)):  # past the step-2 and -4 saves
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    return proc, log, losses


def rank_one(proc: subprocess.Popen):
    """Rank 1: torchrun's second worker, or the script Lightning's launcher re-ran."""
    import psutil

    return next(c for c in psutil.Process(proc.pid).children()
                if c.environ().get("LOCAL_RANK") == "1")


def assert_nothing_left(tree: list) -> None:
    import psutil

    time.sleep(1)
    left = []
    for process in tree:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append((process.pid, process.cmdline()[-1][-40:]))
        except psutil.NoSuchProcess:
            pass
    assert not left, left


@pytest.mark.parametrize("launcher", ["torchrun", "lightning"])
def test_a_stopped_rank_fails_the_job_within_the_timeout_naming_it(tmp_path, launcher):
    import psutil

    proc, log, _ = launch(tmp_path, launcher)
    tree = psutil.Process(proc.pid).children(recursive=True)
    stopped = rank_one(proc)
    sent = time.monotonic()
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        proc.wait(timeout=TIMEOUT + 60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    took = time.monotonic() - sent
    output = log.read_text()
    print(f"{launcher}: SIGSTOP of rank 1 -> job failed after {took:.1f} s")
    assert "nemo_lite: job hung: no heartbeat for more than 10 s from rank 1 (last step" in output
    assert proc.returncode != 0 and took < TIMEOUT + 5, (took, output[-3000:])
    assert_nothing_left(tree)  # the stopped rank and every child of both ranks are gone


@pytest.mark.parametrize("rank0", ["in a collective", "asleep"])
def test_a_killed_rank_fails_the_job_and_leaves_no_orphans(tmp_path, rank0):
    """SIGKILL of rank 1 (Lightning's launcher): the job fails in seconds, and rank 1's
    children (megatron's checkpoint-writer manager, the resource tracker), which nothing would
    end, are gone too. Rank 0 in a collective fails and kills them itself
    (RankWatchdog.on_exception); rank 0 asleep (after step 5, outside any collective) is killed
    by Lightning's launcher thread, which now kills rank 0's whole tree first (a CI run found
    the orphans when that thread came first)."""
    import psutil

    pause = {"pause_after_step": 5} if rank0 == "asleep" else {}
    proc, log, losses = launch(tmp_path, "lightning", **pause)
    while pause and 5 not in read_losses(losses):
        time.sleep(0.05)
    tree = psutil.Process(proc.pid).children(recursive=True)
    victim = rank_one(proc)
    orphans = victim.children(recursive=True)
    assert orphans, "rank 1 had no children to orphan"
    sent = time.monotonic()
    victim.kill()
    try:
        proc.wait(timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    print(f"SIGKILL of rank 1, rank 0 {rank0} -> job failed after {time.monotonic() - sent:.1f} s")
    assert proc.returncode != 0
    assert_nothing_left(tree)
