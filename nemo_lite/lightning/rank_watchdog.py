"""RankWatchdog: a job whose ranks stop making progress fails within `timeout_s`, naming them,
and leaves no process behind.

Without it, a stopped rank (SIGSTOP, stuck I/O, a dead node) leaves the others waiting in a
collective for the process group's timeout, 30 minutes; and a rank killed outright leaves its
multiprocessing children (the checkpoint writer's manager, the resource tracker) running.

How: each rank runs a daemon thread that, every `interval_s`, writes a heartbeat to a small
TCPStore hosted by global rank 0 (`<beat>|<step>|<pid>|<host>|<child pids>`) and reads every
other rank's. The training loop itself only records the step it finished (two attribute writes
per step: no collective, no I/O, nothing on the step's path). A rank fails the job when
- another rank's heartbeat has not changed for `timeout_s` (that process is stopped or gone),
- the store has not answered for `timeout_s` (rank 0's process or node is stopped or gone), or
- no step (training or validation batch) has finished for `timeout_s` while every heartbeat is
  alive (a deadlock or a collective that never completes; the clock waits while a checkpoint is
  being written, and the first step gets twice the time).
It prints one line naming the rank(s) and the step, kills the stopped ranks that run on its own
host (SIGKILL works on a stopped process) with the children they last reported, kills its own
children, and exits with `HUNG_EXIT_CODE`; a launcher then ends the other ranks (torchrun, srun). When a rank dies and training fails with an exception, the
same clean-up runs (`on_exception`), so the dead rank's children go too.

Times are compared on each rank's own monotonic clock only (when it last saw a value change),
so clocks that differ between nodes do not matter.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import timedelta
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.process_tree import kill_descendants

HUNG_EXIT_CODE = 124  # as `timeout` exits


class RankWatchdog(Callback, IOMixin):
    """Fail a multi-rank job within `timeout_s` of a rank stopping; see the module docstring."""

    def __init__(self, timeout_s: float = 120.0, interval_s: Optional[float] = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"RankWatchdog(timeout_s={timeout_s}): give seconds > 0.")
        self.timeout_s = float(timeout_s)
        self.interval_s = float(interval_s or min(10.0, max(0.5, timeout_s / 10)))
        if self.interval_s >= self.timeout_s:
            raise ValueError(f"RankWatchdog: interval_s={self.interval_s} must be less than "
                             f"timeout_s={self.timeout_s}.")
        self.step = 0  # the last finished step, written by the training loop
        self.progress_at = time.monotonic()
        self.saving = False
        self._first = True
        self._store: Any = None
        self._peers: dict[int, tuple[int, str, list[int]]] = {}  # rank -> (pid, host, children)
        self._seen: dict[int, Any] = {}  # pid -> psutil.Process, made while it was reported
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- the training loop's side: record progress, nothing else ---------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        import torch.distributed as dist

        if trainer.world_size < 2 or not dist.is_initialized():
            return
        from nemo_lite.lightning.launcher_cleanup import (
            LAUNCHER_KILLS_ITS_TREE,
            launched_ranks_here,
        )

        if launched_ranks_here(trainer):
            LAUNCHER_KILLS_ITS_TREE.install()
        self.step, self.progress_at, self._first = trainer.global_step, time.monotonic(), True
        self._store = _open_store(trainer.global_rank, trainer.world_size, self.interval_s)
        self._beat(trainer.global_rank, 0)
        dist.barrier()  # every rank's first heartbeat is in the store
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._watch, args=(trainer.global_rank, trainer.world_size), daemon=True,
            name="rank-watchdog")
        self._thread.start()

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        self.step, self.progress_at = trainer.global_step, time.monotonic()
        self.saving, self._first = False, False

    def on_validation_batch_end(self, trainer: Any, *args: Any) -> None:
        self.progress_at = time.monotonic()

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Any) -> None:
        self.saving = True  # until the next step ends: a long save is not a hang

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop.set()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Training failed (often: a rank died and a collective broke): kill what the dead
        ranks on this host left behind, and this rank's own children."""
        self._stop.set()
        if self._store is not None:
            _kill_tree(self._seen, _dead_local_ranks(self._peers))

    # --- the watchdog thread ------------------------------------------------------------------
    def _beat(self, rank: int, beat: int) -> None:
        children = ",".join(str(p) for p in _children(os.getpid()))
        self._store.set(f"hb/{rank}", f"{beat}|{self.step}|{os.getpid()}|{socket.gethostname()}"
                                      f"|{children}")

    def _watch(self, rank: int, world: int) -> None:
        seen: dict[int, tuple[str, float]] = {}  # rank -> (its last value, when it changed)
        beat, store_ok = 0, time.monotonic()
        while not self._stop.wait(self.interval_s):
            now = time.monotonic()
            try:
                beat += 1
                self._beat(rank, beat)
                values = self._store.multi_get([f"hb/{r}" for r in range(world)])
                store_ok = now
            except Exception:  # noqa: BLE001 - a stopped store host: timeouts, resets
                if now - store_ok > self.timeout_s:
                    self._fail(f"the heartbeat store on rank 0 has not answered for "
                               f"{now - store_ok:.0f} s: rank 0 is stopped or gone", [0])
                continue
            stale = []
            for peer, raw in enumerate(values):
                value = raw.decode()
                parts = value.split("|")
                self._peers[peer] = (int(parts[2]), parts[3],
                                     [int(p) for p in parts[4].split(",") if p])
                _remember(self._seen, self._peers[peer])
                if peer not in seen or seen[peer][0].split("|")[0] != parts[0]:
                    seen[peer] = (value, now)
                elif now - seen[peer][1] > self.timeout_s:
                    stale.append((peer, int(parts[1])))
            if stale:
                names = ", ".join(f"rank {r} (last step {s})" for r, s in stale)
                self._fail(f"no heartbeat for more than {self.timeout_s:.0f} s from {names}: "
                           "the process is stopped or gone", [r for r, _ in stale])
            allowed = self.timeout_s * (2 if self._first else 1)
            if not self.saving and now - self.progress_at > allowed:
                self._fail(f"no rank finished a step for {now - self.progress_at:.0f} s (this "
                           f"rank's last step: {self.step}; every heartbeat alive: a deadlock "
                           "or a collective that never completes)", [])

    def _fail(self, why: str, ranks: list[int]) -> None:
        try:  # nothing here may keep the process alive: a broken stderr pipe included
            print(f"nemo_lite: job hung: {why}; failing it (exit code {HUNG_EXIT_CODE}).",
                  file=sys.stderr, flush=True)
        finally:
            here = socket.gethostname()
            local = {r: self._peers[r] for r in ranks
                     if r in self._peers and self._peers[r][1] == here}
            try:
                _kill_tree(self._seen, local)
            finally:
                os._exit(HUNG_EXIT_CODE)


def _open_store(rank: int, world: int, interval_s: float) -> Any:
    """A TCPStore on global rank 0 (a free port, told to the others over the process group)."""
    import torch.distributed as dist

    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    timeout = timedelta(seconds=max(2 * interval_s, 5.0))
    server = dist.TCPStore(host, 0, world, is_master=True, timeout=timeout,
                           wait_for_workers=False) if rank == 0 else None
    where = [host, server.port if server else 0]
    dist.broadcast_object_list(where, src=0)
    return server or dist.TCPStore(where[0], where[1], world, is_master=False, timeout=timeout)


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _dead_local_ranks(peers: dict[int, tuple[int, str, list[int]]]) -> dict:

    here = socket.gethostname()
    return {r: info for r, info in peers.items()
            if info[1] == here and info[0] != os.getpid() and not _alive(info[0])}


def _alive(pid: int) -> bool:
    """Running (a killed child of this process stays a zombie until it is reaped)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _remember(seen: dict[int, Any], info: tuple[int, str, list[int]]) -> None:
    """Hold a psutil.Process for a same-host rank and its children while they are reported:
    psutil's kill() checks it is still that process, so a pid reused later is never hit."""
    import psutil

    if info[1] != socket.gethostname():
        return
    for pid in (info[0], *info[2]):
        if pid not in seen:
            try:
                seen[pid] = psutil.Process(pid)
            except psutil.Error:
                pass


def _kill_tree(seen: dict[int, Any], ranks: dict[int, tuple[int, str, list[int]]]) -> None:
    """SIGKILL the given ranks of this host and the children they reported (the very
    processes seen then, see `_remember`), then this process's own children."""
    import psutil

    targets = [seen[p] for pid, _, children in ranks.values() for p in (pid, *children)
               if p in seen and p != os.getpid()]
    for process in targets:
        try:
            process.kill()  # psutil: NoSuchProcess if the pid now names another process
        except psutil.Error:
            pass
    kill_descendants()
