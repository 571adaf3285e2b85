"""PreemptionCallback: a scheduler's stop signal becomes a checkpoint of one agreed step and an
exit code that asks for the job to be run again.

Schedulers warn before they kill: Slurm sends SIGTERM on preemption (then SIGKILL after its
KillWait, 30 s by default), or the signal a job asked for with `--signal=USR1@<seconds>` before
its time limit; torchrun and Lightning's launcher forward SIGTERM to the ranks. The signal may
reach any rank, or only some. What this callback does with it:

1. The signal handler only records the signal and the time (nothing else is safe inside a
   handler: Lightning's own SIGTERM handler starts a collective there, which is how a SIGTERM to
   one rank hung the job). The callback's handlers replace Lightning's for the length of
   training; Lightning's teardown puts the earlier handlers back.
2. After every training step all ranks all-reduce one flag (MAX, on a CPU gloo group: no GPU
   sync), so every rank learns of a signal that reached any of them at the same step boundary.
3. They save a checkpoint of that step through the run's `nl.ModelCheckpoint` (the same names,
   `last` link and top-k as any save; a save is atomic, see checkpoint_io.py) and stop.
4. `nl.Trainer.fit` then raises `Preempted` (a SystemExit with `PREEMPTED_EXIT_CODE`, 75), on
   every rank: the job ends non-zero, so no scheduler takes it for done, and the rerun resumes
   from that checkpoint (`AutoResume`).

`grace_s` bounds it all: a rank still busy `grace_s` after the signal (a step or the save that
cannot finish in time) exits with the same code at once; the newest complete checkpoint stands
and a partly written one is never taken (checkpoint_io.py checks completeness on load). The
default of 25 s fits Slurm's default KillWait of 30 s. NeMo 2.0 names this callback
`PreemptionCallback(sig=...)`; its `sig` chooses one signal (default here: SIGTERM and SIGUSR1).

Who runs the job again: on Slurm preemption (SIGTERM) Slurm itself requeues the job when its
partition preempts by REQUEUE, and a cancelled job must stay cancelled. SIGUSR1 is the warning
a job asks for before its time limit (`executors.slurm(signal_before_limit_s=...)`, i.e.
`--signal=USR1@<s>`), and nobody requeues that job but the job itself: with `requeue=None`
(default) global rank 0 runs `scontrol requeue $SLURM_JOB_ID` once the checkpoint is written,
inside a Slurm job, on SIGUSR1 only (Lightning's `SLURMEnvironment(auto_requeue=True)` does the
same). `requeue=True` requeues on every signal, `False` never.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.process_tree import kill_descendants

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """Training stopped on a preemption signal after checkpointing step `step` (None: the grace
    period ran out first). Its exit code is PREEMPTED_EXIT_CODE."""

    def __init__(self, signum: int, step: Optional[int]) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.signum, self.step = signum, step

    def __str__(self) -> str:
        saved = f"checkpointed step {self.step}" if self.step is not None else "no new checkpoint"
        return (f"stopped on {signal.Signals(self.signum).name}: {saved}; exit code "
                f"{PREEMPTED_EXIT_CODE} (rerun to resume)")


class PreemptionCallback(Callback, IOMixin):
    """Checkpoint an agreed step and exit with code 75 when a rank gets `signals`."""

    def __init__(self, sig: Optional[int] = None, signals: Sequence[int] = DEFAULT_SIGNALS,
                 grace_s: float = 25.0, requeue: Optional[bool] = None) -> None:
        if grace_s <= 0:
            raise ValueError(f"PreemptionCallback(grace_s={grace_s}): give the seconds a "
                             "scheduler waits between its signal and SIGKILL (> 0).")
        self.signals = tuple(signal.Signals(s) for s in ([sig] if sig is not None else signals))
        self.grace_s = grace_s
        self.requeue = requeue
        self.received: Optional[tuple[int, float]] = None  # (signal, monotonic time) on this rank
        self.stopped: Optional[Preempted] = None  # set once all ranks agreed to stop
        self._group: Any = None
        self._done = threading.Event()  # set when training ends: no grace exit after that

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        import torch.distributed as dist

        if stage == "fit" and dist.is_initialized() and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")  # the flag stays on the CPU

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.received, self.stopped = None, None
        self._done = threading.Event()
        for signum in self.signals:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = (signum, time.monotonic())
            threading.Thread(target=self._exit_after_grace, args=(self._done,), daemon=True,
                             name="preemption-grace").start()

    def _exit_after_grace(self, done: threading.Event) -> None:
        if done.wait(self.grace_s):
            return  # training ended in time (a notebook that caught Preempted lives on)
        signum = self.received[0] if self.received else signal.SIGTERM
        print(f"nemo_lite: {signal.Signals(signum).name} {self.grace_s:.0f} s ago and this rank "
              "has not finished its checkpoint: exiting now; the newest complete checkpoint "
              f"stands (exit code {PREEMPTED_EXIT_CODE}).", file=sys.stderr, flush=True)
        kill_descendants()
        os._exit(PREEMPTED_EXIT_CODE)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        signum = self._agreed_signal(trainer)
        if signum is None:
            return
        if self.received is None:  # told by another rank: the same grace from here
            self._on_signal(signum, None)
        saved = _save_now(trainer)
        self.stopped = Preempted(signum, trainer.global_step if saved else None)
        if trainer.is_global_zero:
            print(f"nemo_lite: {self.stopped}", file=sys.stderr, flush=True)
            if self._requeues(signum):
                _requeue_slurm_job(os.environ["SLURM_JOB_ID"])
        trainer.should_stop = True

    def _requeues(self, signum: int) -> bool:
        if self.requeue is False or not os.environ.get("SLURM_JOB_ID"):
            return False
        return self.requeue is True or signum == signal.SIGUSR1

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._done.set()

    def _agreed_signal(self, trainer: Any) -> Optional[int]:
        """The signal any rank received (the largest number if several), on every rank."""
        import torch
        import torch.distributed as dist

        mine = self.received[0] if self.received else 0
        if trainer.world_size > 1 and dist.is_initialized():
            flag = torch.tensor([mine], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            mine = int(flag.item())
        return mine or None


@contextlib.contextmanager
def stop_signals_held(signals: Sequence[int] = DEFAULT_SIGNALS) -> Iterator[None]:
    """Hold the stop signals back from this thread while a checkpoint is written, and from the
    processes it starts meanwhile. megatron's checkpoint writer starts a multiprocessing manager
    at a process's first save (and writer processes at every save); torchrun and Slurm signal
    every process of a rank, and that manager, left to the default action, died mid-save (a
    BrokenPipeError in the rank, no checkpoint). A held signal stays pending; this thread
    receives it when the save is done (the manager, which never releases it, ends with the
    rank)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # multiprocessing starts its resource tracker with SIGTERM blocked and then UNBLOCKS it in
    # this thread, which would undo the hold: start the tracker first (later calls return early)
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    held = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _save_now(trainer: Any) -> bool:
    """A checkpoint of this step through the run's nl.ModelCheckpoint; False without one."""
    from nemo_lite.lightning.model_checkpoint import ModelCheckpoint

    callback = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if callback is None:
        return False
    callback.save_now(trainer)
    return True


def _requeue_slurm_job(job_id: str) -> None:
    """`scontrol requeue` this job: Slurm ends it (SIGTERM, SIGKILL after KillWait) and starts
    it again, and the rerun resumes from the checkpoint just written."""
    try:
        done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True,
                              timeout=30)
        problem = done.stderr.strip() if done.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as error:
        problem = str(error)
    if problem:
        print(f"nemo_lite: could not requeue Slurm job {job_id} ({problem}); resubmit it to "
              "resume from the checkpoint.", file=sys.stderr, flush=True)
    else:
        print(f"nemo_lite: requeued Slurm job {job_id}", file=sys.stderr, flush=True)
