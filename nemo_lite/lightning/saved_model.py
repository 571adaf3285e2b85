"""The weights a checkpoint saved, back into a model built as it was saved: the one load that
inference and export share (training restores through `checkpointing.Checkpointer`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nemo_lite.lightning.checkpoint_dir import CheckpointError, read_manifest
from nemo_lite.lightning.checkpoint_io import MegatronCheckpointIO
from nemo_lite.lightning.model_state import load_model_state, merge_parts, model_sharded_state_dict


def load_saved_model(chunks: Sequence[torch.nn.Module], path: Any,
                     inspected: bool = False) -> None:
    """Collective: the weights checkpoint `path` saved into a model built as it was saved
    (with its fine-tuning transform, e.g. LoRA): everything from `path`, or, for a
    trainable-only checkpoint (adapters), the frozen base from the checkpoint its manifest
    names (`base_weights`) and the rest from `path`. `inspected`: `path` was already checked."""
    io = MegatronCheckpointIO()
    manifest = read_manifest(path) or {}
    if manifest.get("model_part") != "trainable":
        states = io.load_checkpoint(path, sharded_state_dict=model_sharded_state_dict(chunks),
                                    inspected=inspected)["model"]
        load_model_state(chunks, states)
        return
    base = manifest.get("base_weights")
    if not base or not Path(base).exists():
        raise CheckpointError(
            f"{path} holds only fine-tuned adapters; their base weights come from {base}, which "
            "does not exist: put that checkpoint back at that path.")
    frozen = io.load_checkpoint(base, sharded_state_dict=model_sharded_state_dict(
        chunks, "frozen"))["model"]
    trainable = io.load_checkpoint(path, sharded_state_dict=model_sharded_state_dict(
        chunks, "trainable"), inspected=inspected)["model"]
    load_model_state(chunks, [merge_parts(f, t) for f, t in zip(frozen, trainable, strict=True)])
