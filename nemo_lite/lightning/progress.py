"""A progress display that prints plain lines: readable in logs, Slurm output and CI alike.

MegatronStrategy(replace_progress_bar=True, progress_interval=N) puts this in place of
Lightning's TQDM bar (NeMo's MegatronProgressBar does the same): global rank 0 prints one line
every N optimizer steps with the step, the loss reduced across data-parallel ranks, the
learning rate, the gradient norm, the consumed samples, tokens/s and the step time (both of the
step itself; time spent between steps, in checkpoint saves or validation, is shown apart), and
one line per validation with its loss.
"""

import time
from typing import Any

from lightning.pytorch.callbacks.progress import ProgressBar


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class MegatronProgressPrinter(ProgressBar):
    def __init__(self, interval: int = 1) -> None:
        super().__init__()
        self.interval = max(1, int(interval))
        self._enabled = True
        self._last = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not (self._enabled and trainer.is_global_zero) or step % self.interval:
            return
        now = time.perf_counter()
        elapsed = (now - self._last) / self.interval if self._last else float("nan")
        self._last = now
        metrics = trainer.callback_metrics
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        values = {  # this step's: the optimizer has stepped, the module has not logged it yet
            "loss": (metrics.get("reduced_train_loss"), ".4f"),
            "lr": (getattr(optimizer, "lr", None), ".3e"),
            "grad_norm": (getattr(optimizer, "last_grad_norm", None), ".3f"),
            "consumed_samples": (metrics.get("consumed_samples"), ".0f"),
        }
        parts = [f"step {step}/{trainer.max_steps}"]
        for label, (value, fmt) in values.items():
            number = _number(value)
            if number is not None:
                parts.append(f"{label} {number:{fmt}}")
        tokens = _number(metrics.get("tokens_per_sec"))
        step_time = _number(metrics.get("step_time"))
        if self.interval == 1 and step_time is not None:
            # tokens/s and ms/step both from the step itself; time spent between steps
            # (checkpoint saves, validation) is shown apart, not folded into the step
            if tokens is not None:
                parts.append(f"{tokens:.0f} tokens/s")
            parts.append(f"{step_time * 1000:.0f} ms/step")
            between = elapsed - step_time
            if between > max(0.05, 0.1 * step_time):
                parts.append(f"+{between * 1000:.0f} ms between steps (checkpoint, validation)")
        else:
            parts.append(f"{elapsed * 1000:.0f} ms/step")
        print(" | ".join(parts), flush=True)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not (self._enabled and trainer.is_global_zero) or trainer.sanity_checking:
            return
        value = _number(trainer.callback_metrics.get("val_loss"))
        if value is not None:
            print(f"validation at step {trainer.global_step} | val_loss {value:.4f}", flush=True)


def use_printed_progress(trainer: Any, interval: int) -> None:
    """Lightning's default bar (TQDM or Rich) -> one printed line per `interval` steps; a
    progress bar of the user's own stays."""
    from lightning.pytorch.callbacks.progress import RichProgressBar, TQDMProgressBar

    for i, callback in enumerate(trainer.callbacks):
        if type(callback) in (TQDMProgressBar, RichProgressBar):
            trainer.callbacks[i] = MegatronProgressPrinter(interval)
