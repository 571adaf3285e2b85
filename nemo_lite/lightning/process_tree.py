"""Kill this process's children before it ends itself with `os._exit`.

A rank's children (megatron's checkpoint-writer manager, which megatron keeps for the life of the
process, and multiprocessing's resource tracker) end by themselves only when the rank exits
through Python's finalizers. `os._exit` skips those: the children, reparented to init, then outlive
the job, and a launcher that sees the rank gone never signals them. (Its process group would
reach them, but torchrun signals only the groups of ranks that still run, and the manager, started
while a save held SIGTERM back, ignores SIGTERM anyway.) So every `os._exit` of nemo_lite first
SIGKILLs the process's whole subtree.
"""

from __future__ import annotations


def kill_descendants(pid: int | None = None) -> int:
    """SIGKILL every descendant of process `pid` (default: this one); returns how many were
    signalled."""
    import psutil

    killed = 0
    for process in psutil.Process(pid).children(recursive=True):
        try:
            process.kill()  # psutil: NoSuchProcess if the pid now names another process
            killed += 1
        except psutil.Error:
            pass
    return killed
