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
default in either release; installed when megatron's parallel state is set up.
"""

from __future__ import annotations

import importlib
from typing import Any

from nemo_lite.lightning.shims import Shim

_MODULE = "megatron.core.dist_checkpointing.strategies.filesystem_async"
_GETTERS = ("_get_write_results_queue", "get_write_results_queue")  # 0.17, 0.19


def _forked_results_queue(module: Any) -> Any:
    def get_write_results_queue(mp_mode: str = "fork") -> Any:
        import multiprocessing as mp

        if module._results_queue is None:
            module._results_queue = mp.get_context(mp_mode).Manager().Queue()
        return module._results_queue

    get_write_results_queue.__nemo_lite_shim__ = True  # type: ignore[attr-defined]
    return get_write_results_queue


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
