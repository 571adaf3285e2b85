"""Model weights through megatron's dist_checkpointing: saved sharded, loadable into any layout.

Every tensor is saved under its global key with its global shape and this rank's offset, so
a checkpoint written at TP2+PP2 loads at TP1 (or any other layout) and megatron reshards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

WEIGHTS_DIR = "weights"


def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The megatron model inside DistributedDataParallel / Float16Module wrappers."""
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.transformer.module import Float16Module

    while isinstance(chunk, (DistributedDataParallel, Float16Module)):
        chunk = chunk.module
    return chunk


def model_sharded_state_dict(chunks: Sequence[torch.nn.Module]) -> dict[str, Any]:
    return {"model": [unwrap(chunk).sharded_state_dict() for chunk in chunks]}


def save_model_weights(chunks: Sequence[torch.nn.Module], path: str | Path) -> Path:
    """Collective: every rank calls it; writes `path/weights` in megatron's torch_dist format."""
    from megatron.core import dist_checkpointing

    target = Path(path) / WEIGHTS_DIR
    if torch.distributed.get_rank() == 0:
        target.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    dist_checkpointing.save(model_sharded_state_dict(chunks), str(target))
    return target


def load_model_weights(chunks: Sequence[torch.nn.Module], path: str | Path) -> None:
    """Collective: load weights saved from any layout into this rank's chunks."""
    from megatron.core import dist_checkpointing

    source = Path(path)
    if (source / WEIGHTS_DIR).is_dir():
        source = source / WEIGHTS_DIR
    if not source.is_dir():
        raise FileNotFoundError(
            f"no checkpoint at {path}: expected a directory written by save_model_weights "
            f"(with a '{WEIGHTS_DIR}/' sub-directory)."
        )
    if not dist_checkpointing.check_is_distributed_checkpoint(str(source)):
        raise ValueError(
            f"{source} is not a megatron distributed checkpoint (metadata.json missing or "
            "unreadable): it may be incomplete; point at a complete checkpoint directory."
        )
    loaded = dist_checkpointing.load(model_sharded_state_dict(chunks), str(source))
    for chunk, state in zip(chunks, loaded["model"], strict=False):
        unwrap(chunk).load_state_dict(state, strict=True)
