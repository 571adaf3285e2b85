"""MegatronStrategy's checkpoint half: every rank saves and loads its shards, in any layout.

Lightning calls these hooks on every rank (MegatronStrategy turns `restore_checkpoint_after_setup`
on, so the model chunks and optimizer exist and their sharded state dicts say which shard each
rank reads). The files themselves are MegatronCheckpointIO's job.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.trainer.states import TrainerFn

from nemo_lite.lightning import rng
from nemo_lite.lightning.checkpoint_io import CONTEXT_DIR, CheckpointError
from nemo_lite.lightning.model_state import (
    load_model_state,
    merge_parts,
    model_sharded_state_dict,
    saves_trainable_only,
)

log = logging.getLogger(__name__)


class CheckpointingMixin:
    """Save / load hooks of a Lightning strategy holding `megatron_parallel` and `layout`."""

    @property
    def restore_checkpoint_after_setup(self) -> bool:
        """Load after the model chunks and optimizer exist: their sharded state dicts say what
        (and which shard) this rank reads."""
        return True

    def lightning_module_state_dict(self) -> dict[str, Any]:
        return {}  # the weights go into the sharded part of the checkpoint (save_checkpoint)

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        return {}  # likewise

    def _optimizer_format(self) -> str | None:
        if not self.optimizers:
            return None
        if not getattr(self.ddp_config, "use_distributed_optimizer", False):
            return "param"
        return "fully_reshardable" if self.ckpt_optim_fully_reshardable else "dp_reshardable"

    def _layout_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self.layout)
        record["world_size"] = self.world_size
        return record

    def _base_weights(self) -> str | None:
        """Where the frozen weights of a trainable-only model come from: the checkpoint this
        run restored (RestoreConfig) or the one its resumed checkpoint named."""
        base = getattr(self, "_frozen_weights_from", None)
        restore = getattr(self, "restore_config", None)
        if base is None and restore is not None and restore.load_model_state:
            base = str(Path(restore.path).resolve())
        return base

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any,
                        storage_options: Any = None) -> None:
        """Collective: model, optimizer (+ LR schedule), RNG, trainer state; atomic commit.

        A trainable-only model (e.g. LoRA) with a base checkpoint saves only the parameters
        that require grad, and the manifest names the base (`base_weights`)."""
        chunks = list(self.megatron_parallel)
        base = self._base_weights() if saves_trainable_only(chunks) else None
        model_state = model_sharded_state_dict(chunks, "trainable" if base else "all")
        trainer_state = {k: v for k, v in checkpoint.items()
                         if k not in ("state_dict", "optimizer_states")}
        sharded: dict[str, Any] = {**model_state, "rng_state": rng.sharded(),
                                   "trainer": trainer_state, "layout": self._layout_record()}
        save_optimizer = self.ckpt_save_optimizer and "optimizer_states" in checkpoint
        if save_optimizer and self.optimizers:
            sharded["optimizer"] = self.optimizers[0].sharded_state_dict(
                model_state, fully_reshardable=self.ckpt_optim_fully_reshardable)
        data_state = next((v for k, v in checkpoint.items()
                           if isinstance(v, dict) and "consumed_samples" in v), {})
        manifest = {
            "step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"),
            "consumed_samples": data_state.get("consumed_samples"),
            "layout": self._layout_record(),
            "optimizer": self._optimizer_format() if "optimizer" in sharded else None,
            "model_part": "trainable" if base else "all",
            "base_weights": base,
        }
        self.checkpoint_io.save_checkpoint(
            sharded, filepath, {"manifest": manifest, "before_commit": self._write_context})

    def _write_context(self, checkpoint_dir: Any) -> None:
        """Rank 0: the run's config next to its weights. A config that cannot be written costs
        a warning, never the checkpoint."""
        try:
            from nemo_lite.io import save_context

            module = self.lightning_module
            trainer = module.trainer
            save_context(checkpoint_dir, trainer=trainer, model=module, data=trainer.datamodule)
        except Exception as error:  # noqa: BLE001 - any failure here must not lose weights
            log.warning("checkpoint %s: run config not written to %s/: %s",
                        checkpoint_dir, CONTEXT_DIR, error)

    def _check_optimizer_compatible(self, path: Any, manifest: dict[str, Any]) -> None:
        saved, current = manifest.get("optimizer"), self._optimizer_format()
        if saved is None or current is None:
            return
        if (saved == "param") != (current == "param"):
            kind = {True: "the plain", False: "the distributed"}
            raise CheckpointError(
                f"checkpoint {path}: its optimizer state was saved by {kind[saved == 'param']} "
                f"optimizer, this run uses {kind[current == 'param']} one. Set "
                "OptimizerConfig(use_distributed_optimizer=...) as saved, or load the weights "
                "only (MegatronStrategy(ckpt_load_optimizer=False) or RestoreConfig)."
            )
        if saved == "dp_reshardable":
            old, new = manifest.get("layout") or {}, self._layout_record()
            keys = [k for k in new if k not in ("world_size",) and old.get(k) != new[k]]
            if keys:
                changes = ", ".join(f"{k} {old.get(k)} -> {new[k]}" for k in keys)
                raise CheckpointError(
                    f"checkpoint {path}: its distributed-optimizer state (dp_reshardable form) "
                    f"only loads at the same model-parallel layout, and this run changes "
                    f"{changes}. Keep that layout, load the weights only "
                    "(MegatronStrategy(ckpt_load_optimizer=False)), or save with "
                    "MegatronStrategy(ckpt_optim_fully_reshardable=True)."
                )

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict:
        """Collective: read `checkpoint_path` into the current layout (resharding as needed)."""
        io = self.checkpoint_io
        manifest = io.inspect(checkpoint_path)
        trainer = self.lightning_module.trainer
        fitting = trainer.state.fn == TrainerFn.FITTING
        chunks = list(self.megatron_parallel)
        partial = manifest.get("model_part") == "trainable"
        if partial:
            self._check_base_weights(checkpoint_path, manifest, chunks)
        model_state = model_sharded_state_dict(chunks, "trainable" if partial else "all")
        request: dict[str, Any] = dict(model_state)
        load_optimizer = (fitting and self.ckpt_load_optimizer and bool(self.optimizers)
                          and manifest.get("optimizer") is not None)
        if load_optimizer:
            self._check_optimizer_compatible(checkpoint_path, manifest)
            self.optimizers[0].prepare_for_load()
            request["optimizer"] = self.optimizers[0].sharded_state_dict(
                model_state, is_loading=True,
                fully_reshardable=manifest["optimizer"] == "fully_reshardable")
        same_layout = manifest.get("layout") == self._layout_record()
        if fitting and same_layout:
            request["rng_state"] = rng.sharded()
        loaded = io.load_checkpoint(checkpoint_path, sharded_state_dict=request, inspected=True)
        if "trainer" not in loaded:
            raise CheckpointError(
                f"checkpoint {checkpoint_path} holds weights only (no trainer state): start "
                "from it with RestoreConfig(path=...) instead of resuming it.")
        checkpoint = dict(loaded["trainer"])
        checkpoint["state_dict"] = loaded["model"]
        if partial:  # the frozen part from the base checkpoint, then both as one state dict
            base = manifest["base_weights"]
            frozen = io.load_checkpoint(
                base, sharded_state_dict=model_sharded_state_dict(chunks, "frozen"))["model"]
            checkpoint["state_dict"] = [merge_parts(f, t)
                                        for f, t in zip(frozen, loaded["model"], strict=True)]
            self._frozen_weights_from = base
        checkpoint["optimizer_states"] = [loaded["optimizer"]] if load_optimizer else []
        self._pending_rng_state = loaded.get("rng_state")
        if fitting and not same_layout:
            log.info("checkpoint %s was saved with layout %s; resharded into %s (RNG state "
                     "re-seeded)", checkpoint_path, manifest.get("layout"), self._layout_record())
        return checkpoint

    def restore_optimizer_state(self, path: Any) -> None:
        """Collective: `RestoreConfig(load_optim_state=True)`: the optimizer state of checkpoint
        `path` (Adam moments and step, fp32 main weights, loss scaler) into this run's optimizer,
        in any layout its form allows; the LR schedule stays this run's own."""
        io = self.checkpoint_io
        manifest = io.inspect(path)
        if manifest.get("optimizer") is None or not self.optimizers:
            raise CheckpointError(
                f"RestoreConfig(path={str(path)!r}, load_optim_state=True): the checkpoint holds "
                "no optimizer state. Set load_optim_state=False to take its weights only.")
        self._check_optimizer_compatible(path, manifest)
        optimizer = self.optimizers[0]
        optimizer.prepare_for_load()
        model_state = model_sharded_state_dict(list(self.megatron_parallel), "all")
        request = {"optimizer": optimizer.sharded_state_dict(
            model_state, is_loading=True,
            fully_reshardable=manifest["optimizer"] == "fully_reshardable")}
        state = io.load_checkpoint(path, sharded_state_dict=request, inspected=True)["optimizer"]
        state.pop("lr_scheduler", None)  # the new run's schedule starts afresh
        optimizer.load_sharded_state_dict(state)
        log.info("restored the optimizer state (moments, fp32 main weights) of %s", path)

    def _check_base_weights(self, path: Any, manifest: dict[str, Any], chunks: list) -> None:
        base = manifest.get("base_weights")
        if not saves_trainable_only(chunks):
            raise CheckpointError(
                f"checkpoint {path} holds only the trainable weights (e.g. LoRA adapters) of a "
                f"model whose frozen weights come from {base}: load it into the same model, "
                "with its model transform (e.g. llm.finetune(..., peft=LoRA(...))).")
        if not base or not Path(base).exists():
            raise CheckpointError(
                f"checkpoint {path} holds only the trainable weights (e.g. LoRA adapters); its "
                f"frozen base weights come from {base}, which does not exist. Put that base "
                "checkpoint back at that path.")

    def load_model_state_dict(self, checkpoint: dict[str, Any], strict: bool = True) -> None:
        load_model_state(list(self.megatron_parallel), checkpoint["state_dict"], strict=strict)
        if checkpoint.get("optimizer_states"):
            # the saved fp32 main weights come with the optimizer state (loaded next): copies
            # re-made from bf16/fp16 weights would drop every update below their precision
            return
        for optimizer in self.optimizers:
            optimizer.mcore.reload_model_params()  # fp32 main copies follow the loaded weights
        if self.optimizers and self.precision_plugin.is_half:
            log.info("optimizer state not loaded: the fp32 main weights are copies of the "
                     "loaded %s weights", self.precision_plugin.precision)

    def load_optimizer_state_dict(self, checkpoint: dict[str, Any]) -> None:
        for optimizer, state in zip(self.optimizers, checkpoint.get("optimizer_states") or [],
                                    strict=False):
            optimizer.load_sharded_state_dict(state)

    def on_train_start(self) -> None:
        if self._pending_rng_state is not None:
            rng.restore(self._pending_rng_state)
            self._pending_rng_state = None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._finalize_async_saves(blocking=False)

    def _finalize_async_saves(self, blocking: bool) -> None:
        finalize = getattr(self.checkpoint_io, "maybe_finalize", None)
        if finalize is not None:
            finalize(blocking=blocking)

    def on_train_end(self) -> None:
        self._finalize_async_saves(blocking=True)
