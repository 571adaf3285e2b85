"""Per-step throughput and memory, logged like the loss: to the progress bar and every logger.

Megatron's schedule runs a whole global batch inside one Lightning training step, so a step is
`global_batch_size * seq_length` tokens on the whole job. Logged each step (Lightning writes
loggers every `log_every_n_steps`):

- `step_time` (s), `tokens_per_sec` (whole job) and `tokens_per_sec_per_rank`;
- `memory_gib`: peak allocated on the accelerator (CUDA), else this process's resident memory.
"""

import time
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from nemo_lite.lightning.device import is_cuda

GiB = 1024**3


def tokens_per_step(trainer: Any) -> int | None:
    """The latest training step's global batch x sequence length (None when neither data nor
    model says)."""
    strategy = trainer.strategy
    batch = getattr(strategy, "step_global_batch_size", getattr(strategy, "global_batch_size",
                                                                 None))
    data = getattr(trainer, "datamodule", None)
    seq = getattr(data, "seq_length", None)
    if seq is None:
        seq = getattr(getattr(trainer.lightning_module, "config", None), "seq_length", None)
    if batch is None or seq is None:
        return None
    return int(batch) * int(seq)


def memory_in_use(device: torch.device) -> float:
    """GiB: peak allocated on a CUDA device, resident set size of this process on CPU."""
    if is_cuda(device):
        return torch.cuda.max_memory_allocated(device) / GiB
    import psutil

    return psutil.Process().memory_info().rss / GiB


class StepMetrics(Callback):
    def __init__(self) -> None:
        self._start: float | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._start is None:
            return
        elapsed = time.perf_counter() - self._start
        values = {"step_time": elapsed}
        tokens = tokens_per_step(trainer)
        if tokens and elapsed > 0:
            values["tokens_per_sec"] = tokens / elapsed
            values["tokens_per_sec_per_rank"] = tokens / elapsed / max(trainer.world_size, 1)
        values["memory_gib"] = memory_in_use(trainer.strategy.root_device)
        for name, value in values.items():
            pl_module.log(name, float(value), prog_bar=name in ("step_time", "tokens_per_sec"),
                          batch_size=1, sync_dist=False)


def add_step_metrics(trainer: Any) -> None:
    """Put a StepMetrics first among the callbacks (printed progress reads its values)."""
    if not any(isinstance(c, StepMetrics) for c in trainer.callbacks):
        trainer.callbacks.insert(0, StepMetrics())
