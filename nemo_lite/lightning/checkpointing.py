"""A run's checkpoint in any layout: what MegatronStrategy's Lightning hooks delegate to.

`Checkpointer` is built by the strategy from its checkpoint options; every method takes the
run's state it needs as arguments (the model chunks, the optimizer, the layout record, the DDP
config): nothing is read from the strategy behind its back. Each call is collective: every
rank saves and loads its own shards (the sharded state dicts say which), and MegatronCheckpointIO
writes and reads the files (atomic commit, manifest, checks before a load).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_lite.lightning import rng
from nemo_lite.lightning.checkpoint_dir import CONTEXT_DIR, CheckpointError
from nemo_lite.lightning.model_state import (
    load_model_state,
    merge_parts,
    model_sharded_state_dict,
    saves_trainable_only,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointOptions:
    save_optimizer: bool = True  # MegatronStrategy(ckpt_save_optimizer=)
    load_optimizer: bool = True  # ckpt_load_optimizer
    optim_fully_reshardable: bool = False  # ckpt_optim_fully_reshardable


def optimizer_format(optimizers: Sequence[Any], ddp_config: Any,
                     options: CheckpointOptions) -> str | None:
    """How the optimizer state is saved: "param" (plain optimizer), "dp_reshardable" or
    "fully_reshardable" (distributed optimizer); None without an optimizer."""
    if not optimizers:
        return None
    if not getattr(ddp_config, "use_distributed_optimizer", False):
        return "param"
    return "fully_reshardable" if options.optim_fully_reshardable else "dp_reshardable"


class Checkpointer:
    """Save / load of model, optimizer (+ LR schedule), RNG and trainer state."""

    def __init__(self, io: Any, options: CheckpointOptions) -> None:
        self.io = io
        self.options = options
        self.frozen_weights_from: str | None = None  # base checkpoint of a resumed LoRA run
        self.pending_rng_state: Any = None  # restored at train start (same layout only)

    # --- save ---------------------------------------------------------------------------------
    def save(self, checkpoint: dict[str, Any], filepath: Any, *, chunks: list[Any],
             optimizers: Sequence[Any], ddp_config: Any, layout_record: dict[str, Any],
             restored_from: str | None, write_context: Callable[[Any], None]) -> None:
        """Collective: model, optimizer (+ LR schedule), RNG, trainer state; atomic commit.

        A trainable-only model (e.g. LoRA) with a base checkpoint saves only the parameters that
        require grad, and the manifest names the base (`base_weights`): the checkpoint this run
        restored its weights from (`restored_from`) or the one its resumed checkpoint named."""
        base = self.frozen_weights_from or restored_from
        base = base if saves_trainable_only(chunks) else None
        model_state = model_sharded_state_dict(chunks, "trainable" if base else "all")
        trainer_state = {k: v for k, v in checkpoint.items()
                         if k not in ("state_dict", "optimizer_states")}
        sharded: dict[str, Any] = {**model_state, "rng_state": rng.sharded(),
                                   "trainer": trainer_state, "layout": layout_record}
        if self.options.save_optimizer and "optimizer_states" in checkpoint and optimizers:
            sharded["optimizer"] = optimizers[0].sharded_state_dict(
                model_state, fully_reshardable=self.options.optim_fully_reshardable)
        data_state = next((v for k, v in checkpoint.items()
                           if isinstance(v, dict) and "consumed_samples" in v), {})
        manifest = {
            "step": checkpoint.get("global_step"),
            "epoch": checkpoint.get("epoch"),
            "consumed_samples": data_state.get("consumed_samples"),
            "layout": layout_record,
            "optimizer": (optimizer_format(optimizers, ddp_config, self.options)
                          if "optimizer" in sharded else None),
            "model_part": "trainable" if base else "all",
            "base_weights": base,
        }
        self.io.save_checkpoint(sharded, filepath,
                                {"manifest": manifest, "before_commit": write_context})

    # --- load ---------------------------------------------------------------------------------
    def load(self, path: Any, *, chunks: list[Any], optimizers: Sequence[Any], ddp_config: Any,
             layout_record: dict[str, Any], fitting: bool) -> dict[str, Any]:
        """Collective: read `path` into the current layout (resharding as needed); returns
        Lightning's checkpoint dict (trainer state, `state_dict`, `optimizer_states`)."""
        manifest = self.io.inspect(path)
        partial = manifest.get("model_part") == "trainable"
        if partial:
            _check_base_weights(path, manifest, chunks)
        model_state = model_sharded_state_dict(chunks, "trainable" if partial else "all")
        request: dict[str, Any] = dict(model_state)
        load_optimizer = (fitting and self.options.load_optimizer and bool(optimizers)
                          and manifest.get("optimizer") is not None)
        if load_optimizer:
            _check_optimizer_compatible(path, manifest, optimizer_format(
                optimizers, ddp_config, self.options), layout_record)
            optimizers[0].prepare_for_load()
            request["optimizer"] = optimizers[0].sharded_state_dict(
                model_state, is_loading=True,
                fully_reshardable=manifest["optimizer"] == "fully_reshardable")
        same_layout = manifest.get("layout") == layout_record
        if fitting and same_layout:
            request["rng_state"] = rng.sharded()
        loaded = self.io.load_checkpoint(path, sharded_state_dict=request, inspected=True)
        if "trainer" not in loaded:
            raise CheckpointError(
                f"checkpoint {path} holds weights only (no trainer state): start from it with "
                "RestoreConfig(path=...) instead of resuming it.")
        checkpoint = dict(loaded["trainer"])
        checkpoint["state_dict"] = loaded["model"]
        if partial:  # the frozen part from the base checkpoint, then both as one state dict
            base = manifest["base_weights"]
            frozen = self.io.load_checkpoint(
                base, sharded_state_dict=model_sharded_state_dict(chunks, "frozen"))["model"]
            checkpoint["state_dict"] = [merge_parts(f, t)
                                        for f, t in zip(frozen, loaded["model"], strict=True)]
            self.frozen_weights_from = base
        checkpoint["optimizer_states"] = [loaded["optimizer"]] if load_optimizer else []
        self.pending_rng_state = loaded.get("rng_state")
        if fitting and not same_layout:
            log.info("checkpoint %s was saved with layout %s; resharded into %s (RNG state "
                     "re-seeded)", path, manifest.get("layout"), layout_record)
        return checkpoint

    @staticmethod
    def load_model_state(checkpoint: dict[str, Any], chunks: list[Any],
                         optimizers: Sequence[Any], precision: str, strict: bool = True) -> None:
        load_model_state(chunks, checkpoint["state_dict"], strict=strict)
        if checkpoint.get("optimizer_states"):
            # the saved fp32 main weights come with the optimizer state (loaded next): copies
            # re-made from bf16/fp16 weights would drop every update below their precision
            return
        for optimizer in optimizers:
            optimizer.mcore.reload_model_params()  # fp32 main copies follow the loaded weights
        if optimizers and precision != "32":
            log.info("optimizer state not loaded: the fp32 main weights are copies of the "
                     "loaded %s weights", precision)

    @staticmethod
    def load_optimizer_state(checkpoint: dict[str, Any], optimizers: Sequence[Any]) -> None:
        for optimizer, state in zip(optimizers, checkpoint.get("optimizer_states") or [],
                                    strict=False):
            optimizer.load_sharded_state_dict(state)

    def restore_optimizer_state(self, path: Any, *, chunks: list[Any],
                                optimizers: Sequence[Any], ddp_config: Any,
                                layout_record: dict[str, Any]) -> None:
        """Collective: `RestoreConfig(load_optim_state=True)`: the optimizer state of checkpoint
        `path` (Adam moments and step, fp32 main weights, loss scaler) into this run's
        optimizer, in any layout its form allows; the LR schedule stays this run's own."""
        manifest = self.io.inspect(path)
        if manifest.get("optimizer") is None or not optimizers:
            raise CheckpointError(
                f"RestoreConfig(path={str(path)!r}, load_optim_state=True): the checkpoint holds "
                "no optimizer state. Set load_optim_state=False to take its weights only.")
        _check_optimizer_compatible(path, manifest, optimizer_format(
            optimizers, ddp_config, self.options), layout_record)
        optimizer = optimizers[0]
        optimizer.prepare_for_load()
        model_state = model_sharded_state_dict(chunks, "all")
        request = {"optimizer": optimizer.sharded_state_dict(
            model_state, is_loading=True,
            fully_reshardable=manifest["optimizer"] == "fully_reshardable")}
        state = self.io.load_checkpoint(path, sharded_state_dict=request, inspected=True)
        state = state["optimizer"]
        state.pop("lr_scheduler", None)  # the new run's schedule starts afresh
        optimizer.load_sharded_state_dict(state)
        log.info("restored the optimizer state (moments, fp32 main weights) of %s", path)

    def restore_rng(self) -> None:
        """At train start: the saved RNG state, when the checkpoint had the same layout."""
        if self.pending_rng_state is not None:
            rng.restore(self.pending_rng_state)
            self.pending_rng_state = None

    def finalize_async_saves(self, blocking: bool) -> None:
        finalize = getattr(self.io, "maybe_finalize", None)
        if finalize is not None:
            finalize(blocking=blocking)


def _check_optimizer_compatible(path: Any, manifest: dict[str, Any], current: str | None,
                                layout_record: dict[str, Any]) -> None:
    saved = manifest.get("optimizer")
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
        old = manifest.get("layout") or {}
        keys = [k for k in layout_record if k != "world_size" and old.get(k) != layout_record[k]]
        if keys:
            changes = ", ".join(f"{k} {old.get(k)} -> {layout_record[k]}" for k in keys)
            raise CheckpointError(
                f"checkpoint {path}: its distributed-optimizer state (dp_reshardable form) "
                f"only loads at the same model-parallel layout, and this run changes "
                f"{changes}. Keep that layout, load the weights only "
                "(MegatronStrategy(ckpt_load_optimizer=False)), or save with "
                "MegatronStrategy(ckpt_optim_fully_reshardable=True)."
            )


def _check_base_weights(path: Any, manifest: dict[str, Any], chunks: list[Any]) -> None:
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


def write_run_context(module: Any, checkpoint_dir: Any) -> None:
    """Rank 0: the run's config (trainer, model, data) next to its weights. A config that
    cannot be written costs a warning, never the checkpoint."""
    try:
        from nemo_lite.io import save_context

        save_context(checkpoint_dir, trainer=module.trainer, model=module,
                     data=module.trainer.datamodule)
    except Exception as error:  # noqa: BLE001 - any failure here must not lose weights
        log.warning("checkpoint %s: run config not written to %s/: %s",
                    checkpoint_dir, CONTEXT_DIR, error)
