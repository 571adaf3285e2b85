"""What a run prints: nemo_lite's start-of-run summary and step lines, not library chatter.

Each entry names a message of Lightning or megatron-core that says nothing to a nemo_lite user,
where it comes from and why it is dropped. Nothing is patched: log records are filtered on the
emitting loggers and warnings by message, and only these messages. `nl.Trainer` installs them
(`quiet_run()`); the CPU-only ones are installed by MegatronStrategy when no GPU is used; the
command line's by `nemo_lite.cli.llm` when NeMo-Run loads it (`quiet_command()`).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Quieted:
    source: str  # a logger name, or "warning"
    starts_with: str
    why: str


RUN: tuple[Quieted, ...] = (
    Quieted("lightning.pytorch.utilities.rank_zero", "GPU available:",
            "the run summary states the device and backend"),
    Quieted("lightning.pytorch.utilities.rank_zero", "TPU available:", "as above"),
    Quieted("lightning.pytorch.utilities.rank_zero", "💡 Tip:",
            "an advertisement for a logger nemo_lite does not use"),
    Quieted("lightning.fabric.utilities.distributed", "Initializing distributed:",
            "the run summary states the ranks and layout"),
    Quieted("lightning.pytorch.utilities.rank_zero", "-" * 20, "as above (the process banner)"),
    Quieted("warning", "You are using the `dataloader_iter` step flavor",
            "megatron's schedule takes exactly num_microbatches batches per step, by design"),
    Quieted("warning", "Found `dataloader_iter` argument", "as above"),
    Quieted("warning", "You're resuming from a checkpoint that ended before",
            "Lightning warns that a mid-epoch resume with a plain DataLoader repeats data; "
            "megatron's sampler restarting at consumed_samples makes the resume exact"),
)
CPU: tuple[Quieted, ...] = (
    Quieted("warning", "When using async grad allreduce it is recommended to set the "
            "environment variable CUDA_DEVICE_MAX_CONNECTIONS",
            "a CUDA stream setting; printed once per rank on CPU runs, where it means nothing"),
)

COMMAND: tuple[Quieted, ...] = (
    Quieted("torch.utils.cpp_extension", "No CUDA runtime is found",
            "logged when megatron-core 0.19 imports torch's extension builder on a machine "
            "without CUDA but with a CUDA_HOME-like directory; nemo_lite builds no extension, "
            "and the line would precede every one-line error of the CLI"),
)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.prefixes)


def install(entries: tuple[Quieted, ...]) -> None:
    """Drop `entries` from now on in this process (idempotent)."""
    by_logger: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        if entry.source == "warning":
            warnings.filterwarnings("ignore", message=f"{_escape(entry.starts_with)}")
        else:
            by_logger[entry.source] = by_logger.get(entry.source, ()) + (entry.starts_with,)
    for name, prefixes in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.prefixes == prefixes
                   for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))


def quiet_run() -> None:
    install(RUN)


def quiet_cpu_run() -> None:
    install(CPU)


def quiet_command() -> None:
    """For `nemo llm ...`: installed when nemo_lite's CLI module loads, before megatron does."""
    install(COMMAND)


def _escape(text: str) -> str:
    import re

    return re.escape(text)
