"""When a rank that Lightning's launcher started dies, no process of the job outlives it.

Lightning's launcher (rank 0 of a `devices=N` run started without torchrun) watches its child
ranks from a thread (`_ChildProcessObserver`) and, when one exits non-zero, SIGKILLs the other
ranks and itself at once. Nothing signals rank 0's own children or the dead rank's
(megatron's checkpoint-writer manager, multiprocessing's resource tracker): they lived on as
orphans whenever the observer acted before `RankWatchdog.on_exception` (a CI run of
tests/distributed/test_hangs.py). So rank 0 becomes a child subreaper (the kernel reparents the
orphans of its ranks' processes to it) and the observer first SIGKILLs every descendant of rank 0.
"""

from __future__ import annotations

import ctypes
import importlib
from typing import Any

from nemo_lite.lightning.process_tree import kill_descendants
from nemo_lite.lightning.shims import Shim

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def _observer() -> Any:
    return importlib.import_module(
        "lightning.fabric.strategies.launchers.subprocess_script")._ChildProcessObserver


def _kills_the_tree_first(original: Any) -> Any:
    def terminate_all(self: Any) -> None:
        kill_descendants(self._main_pid)
        original(self)

    terminate_all.__nemo_lite_shim__ = True  # type: ignore[attr-defined]
    return terminate_all


def _install() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    cls = _observer()
    if not getattr(cls._terminate_all, "__nemo_lite_shim__", False):
        cls._terminate_all = _kills_the_tree_first(cls._terminate_all)


LAUNCHER_KILLS_ITS_TREE = Shim(
    "launcher_kills_its_tree",
    "Lightning's _ChildProcessObserver SIGKILLs the ranks and rank 0 when a rank fails, but not "
    "their children (checkpoint-writer manager, resource tracker), which lived on as orphans; "
    "rank 0 becomes a child subreaper and the observer kills all of rank 0's descendants first. "
    "Installed by RankWatchdog in the process that launched the other ranks.",
    _install)


def launched_ranks_here(trainer: Any) -> bool:
    """This process is Lightning's launcher of other ranks (it holds their Popen objects)."""
    return bool(getattr(getattr(trainer.strategy, "launcher", None), "procs", None))
