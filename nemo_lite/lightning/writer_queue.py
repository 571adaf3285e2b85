"""megatron's checkpoint writer gets its results queue from a forked manager, not a spawned one.

megatron's `FileSystemWriterAsync` collects its writer processes' results through a
multiprocessing `Manager().Queue()` that it creates once per process, by default in a *spawn*
context (`filesystem_async._get_write_results_queue`, `get_write_results_queue(mp_mode='spawn')`
in megatron-core 0.19). A spawned interpreter re-imports the main module (NeMo-Run's runner, the
`nemo` script: NeMo-Run, fiddle, rich...) before it serves the queue: 3.1 s of CPU per rank at
its first save, measured here, where a forked manager starts in 0.02 s. megatron's own training
loop asks for the fork context (`get_write_results_queue(mp_mode="fork")` in
megatron/training/async_utils.py, 0.19), and megatron forks its writer processes from the same
process at every save anyway; the 0.17 release has no such argument. So the shim makes fork the
default in either release; installed when megatron's parallel state is set up. The manager also
dies with the rank that started it (`dies_with_its_parent`).
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
from typing import Any

from nemo_lite.lightning.shims import Shim

_MODULE = "megatron.core.dist_checkpointing.strategies.filesystem_async"
_GETTERS = ("_get_write_results_queue", "get_write_results_queue")  # 0.17, 0.19
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _forked_results_queue(module: Any) -> Any:
    def get_write_results_queue(mp_mode: str = "fork") -> Any:
        import multiprocessing as mp
        from multiprocessing.managers import SyncManager

        if module._results_queue is None:
            manager = SyncManager(ctx=mp.get_context(mp_mode))
            manager.start(initializer=dies_with_its_parent, initargs=(os.getpid(),))
            module._results_queue = manager.Queue()  # the proxy keeps the manager alive
        return module._results_queue

    get_write_results_queue.__nemo_lite_shim__ = True  # type: ignore[attr-defined]
    return get_write_results_queue


def dies_with_its_parent(parent: int) -> None:
    """Run in the manager process at its start: SIGKILL it when the rank that started it dies.

    The manager is started during a save, while the rank holds SIGTERM back (preemption.py's
    `stop_signals_held`), and keeps that mask: torchrun's SIGTERM to the rank's process group
    does not end it. A rank that exits normally shuts it down (multiprocessing's finalizer); one
    that is SIGKILLed or ends with `os._exit` did not, and the manager (with the resource tracker
    it keeps open) lived on after the job: found by the two-node and in-job-restart tests."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the rank died before the line above
        os._exit(0)


def _install() -> None:
    module = importlib.import_module(_MODULE)
    for name in _GETTERS:
        original = getattr(module, name, None)
        if original is not None and not getattr(original, "__nemo_lite_shim__", False):
            setattr(module, name, _forked_results_queue(module))


CHECKPOINT_RESULTS_QUEUE_FORKED = Shim(
    "checkpoint_results_queue_forked",
    "megatron's filesystem_async._get_write_results_queue / get_write_results_queue start a "
    "spawn-context Manager at each process's first save, which re-imports the main module "
    "(3.1 s of CPU per rank here); a fork-context Manager (0.02 s), as megatron's own training "
    "loop asks for in 0.19.",
    _install)
