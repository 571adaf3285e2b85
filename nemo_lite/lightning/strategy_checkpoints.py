"""MegatronStrategy's checkpoint hooks: what Lightning calls to save, load and restore.

Lightning's Trainer calls these strategy methods; each hands the work to the run's
`Checkpointer` (checkpointing.py: sharded model and optimizer state, RNG, atomic commit,
resharding on load), with the model chunks, optimizers and layout the strategy holds. A mixin
of MegatronStrategy, kept apart so the strategy file stays about setup and steps.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from lightning.pytorch.trainer.states import TrainerFn

from nemo_lite.lightning.checkpoint_io import save_model_weights
from nemo_lite.lightning.checkpointing import write_run_context
from nemo_lite.lightning.preemption import stop_signals_held


class CheckpointHooks:
    """Mixed into MegatronStrategy (needs its checkpointer, megatron_parallel, layout,
    optimizers, restore_config and _finish_param_gather)."""

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        """Load after the model chunks and optimizer exist: their sharded state dicts say what
        (and which shard) this rank reads."""
        return True

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {}  # the weights go into the sharded part of the checkpoint (save_checkpoint)

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        return {}  # likewise

    def restore_from(self, restore_config: Any) -> None:
        """Start from the weights (and, if asked, the optimizer) of `restore_config.path` at
        setup: AutoResume's choice when a run resumes nothing (the `restore_config` argument)."""
        self.restore_config = restore_config

    def layout_record(self) -> dict[str, Any]:
        """The layout a checkpoint records (a different one on load means a reshard)."""
        return {**dataclasses.asdict(self.layout), "world_size": self.world_size}

    def save_weights(self, path: str) -> None:
        """Collective: write this model's weights (sharded, layout-independent) under `path`."""
        self._finish_param_gather()
        save_model_weights(list(self.megatron_parallel), path)

    def save_checkpoint(self, checkpoint: Any, filepath: Any, storage_options: Any = None) -> None:
        """Collective: model, optimizer (+ LR schedule), RNG, trainer state; atomic commit."""
        self._finish_param_gather()
        restore = self.restore_config
        restored_from = (str(Path(restore.path).resolve())
                         if restore is not None and restore.load_model_state else None)
        with stop_signals_held():  # the writer processes it starts outlive a SIGTERM
            self.checkpointer.save(
                checkpoint, filepath, chunks=list(self.megatron_parallel),
                optimizers=self.optimizers, ddp_config=self.ddp_config,
                layout_record=self.layout_record(), restored_from=restored_from,
                write_context=functools.partial(write_run_context, self.lightning_module))

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict:
        """Collective: read `checkpoint_path` into the current layout (resharding as needed)."""
        return self.checkpointer.load(
            checkpoint_path, chunks=list(self.megatron_parallel), optimizers=self.optimizers,
            ddp_config=self.ddp_config, layout_record=self.layout_record(),
            fitting=self.lightning_module.trainer.state.fn == TrainerFn.FITTING)

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        self.checkpointer.load_model_state(checkpoint, list(self.megatron_parallel),
                                           self.optimizers, self.precision_plugin.precision,
                                           strict=strict)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        self.checkpointer.load_optimizer_state(checkpoint, self.optimizers)

    def on_train_start(self) -> None:
        self.checkpointer.restore_rng()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.checkpointer.finalize_async_saves(blocking=False)

    def on_train_end(self) -> None:
        self.checkpointer.finalize_async_saves(blocking=True)
