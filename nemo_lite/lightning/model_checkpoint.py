"""ModelCheckpoint: Lightning's callback, for megatron's directory checkpoints.

What changes from Lightning's: a checkpoint is a directory (no `.ckpt` suffix) written by
MegatronStrategy on every rank; names carry the step and consumed samples
(`step=40-consumed_samples=320`, led by `val_loss=2.3456-` when that is monitored); the default keeps the last `save_top_k` checkpoints
(monitor "step", mode "max"), and `monitor="val_loss"` keeps the best K instead; `last` is a
link to the newest one; training always ends with a checkpoint of its final step.
"""

from typing import Any, Optional, Union

from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.ignored_options import warn_if_set

DEFAULT_FILENAME = "{step}-{consumed_samples:.0f}"


def default_filename(monitor: str | None) -> str:
    """`step=N-consumed_samples=M`, led by the monitored metric when it is not the step."""
    if monitor in (None, "step"):
        return DEFAULT_FILENAME
    return "{" + monitor + ":.4f}-" + DEFAULT_FILENAME


class ModelCheckpoint(LightningModelCheckpoint, IOMixin):
    FILE_EXTENSION = ""
    CHECKPOINT_NAME_LAST = "last"

    def __init__(
        self,
        dirpath: Optional[str] = None,
        filename: Optional[str] = None,
        monitor: Optional[str] = "step",
        mode: str = "max",
        save_top_k: int = 2,
        save_last: Optional[Union[bool, str]] = "link",
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Any = None,
        every_n_epochs: Optional[int] = None,
        save_on_train_epoch_end: Optional[bool] = False,
        save_weights_only: bool = False,
        save_on_train_end: bool = True,
        verbose: bool = False,
        save_optim_on_train_end: bool = True,
        always_save_context: bool = True,
        save_context_on_train_end: bool = True,
        **kwargs: Any,
    ) -> None:
        # NeMo 2.0's names, accepted so its scripts run unchanged. nemo_lite always writes the
        # context (context/io.json) and the optimizer state into every checkpoint.
        always = "every nemo_lite checkpoint holds the run's context and optimizer state"
        for name, value in (("save_optim_on_train_end", save_optim_on_train_end),
                            ("always_save_context", always_save_context),
                            ("save_context_on_train_end", save_context_on_train_end)):
            warn_if_set("ModelCheckpoint", name, value, True, always)
        self.save_optim_on_train_end = save_optim_on_train_end
        self.always_save_context = always_save_context
        self.save_context_on_train_end = save_context_on_train_end
        kwargs.setdefault("enable_version_counter", False)  # same name again: replace it
        super().__init__(
            dirpath=dirpath, filename=filename or default_filename(monitor), monitor=monitor,
            mode=mode,
            save_top_k=save_top_k, save_last=save_last, every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval, every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end, save_weights_only=save_weights_only,
            verbose=verbose, **kwargs,
        )
        self.save_on_train_end = save_on_train_end

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """A run that stops between save intervals still leaves its final state on disk."""
        if self.save_on_train_end and not trainer.sanity_checking:
            self.save_now(trainer)
        super().on_train_end(trainer, pl_module)

    def save_now(self, trainer: Any) -> None:
        """Save this step now (top-k and `last`, as at an interval) unless it is saved already;
        every rank calls it (the preemption callback does, at the step all ranks agreed on)."""
        if trainer.global_step > 0 and self._last_global_step_saved != trainer.global_step:
            candidates = self._monitor_candidates(trainer)
            if self.monitor is None or self.monitor in candidates:
                self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)
            self._last_global_step_saved = trainer.global_step
