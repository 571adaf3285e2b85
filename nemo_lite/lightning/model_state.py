"""Which of a model's tensors a checkpoint holds, and how they go back into the model.

Everything by default; for a model whose frozen weights come from another checkpoint (e.g. LoRA
adapters over a pretrained base), only the parameters that require grad. Megatron's sharded state
dicts carry global keys and shapes, so the same code serves every parallel layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nemo_lite.lightning.checkpoint_dir import CheckpointError


def unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    """The megatron model inside DistributedDataParallel / Float16Module wrappers."""
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.transformer.module import Float16Module

    while isinstance(chunk, (DistributedDataParallel, Float16Module)):
        chunk = chunk.module
    return chunk


# A model whose frozen weights come from another checkpoint (e.g. LoRA adapters over a
# pretrained base) sets this attribute on its megatron module(s): its checkpoints then hold
# only the parameters that require grad, and the frozen part is read from the base checkpoint.
TRAINABLE_ONLY_ATTR = "checkpoint_trainable_only"


def mark_trainable_only(chunk: Any, trainable_only: bool = True) -> None:
    """Declare that `chunk` checkpoints only its trainable parameters (e.g. LoRA adapters; the
    frozen ones come from the base checkpoint the manifest names), or no longer does."""
    if trainable_only:
        setattr(chunk, TRAINABLE_ONLY_ATTR, True)
    elif hasattr(chunk, TRAINABLE_ONLY_ATTR):
        delattr(chunk, TRAINABLE_ONLY_ATTR)


def saves_trainable_only(chunks: Sequence[torch.nn.Module]) -> bool:
    return any(getattr(unwrap(chunk), TRAINABLE_ONLY_ATTR, False) for chunk in chunks)


def _is_trainable(leaf: Any) -> bool:
    data = getattr(leaf, "data", None)
    return isinstance(data, torch.Tensor) and data.requires_grad


def select_part(state: Any, part: str) -> Any:
    """The entries of a sharded state dict that are trainable tensors (`part="trainable"`)
    or everything else (`"frozen"`); nested dicts keep their structure."""
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out[key] = select_part(value, part)
        elif _is_trainable(value) == (part == "trainable"):
            out[key] = value
    return out


def merge_parts(frozen: Any, trainable: Any) -> Any:
    """One state dict from the two parts `select_part` split it into."""
    out = dict(frozen)
    for key, value in trainable.items():
        out[key] = merge_parts(out[key], value) if isinstance(value, dict) and key in out else value
    return out


def model_sharded_state_dict(chunks: Sequence[torch.nn.Module], part: str = "all") -> dict[str, Any]:
    """The chunks' sharded state dicts: all entries, or the "trainable" / "frozen" part."""
    states = [unwrap(chunk).sharded_state_dict() for chunk in chunks]
    if part != "all":
        states = [select_part(state, part) for state in states]
    return {"model": states}


def _flat_keys(state: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in state.items():
        keys |= _flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def load_model_state(chunks: Sequence[torch.nn.Module], states: Sequence[dict], strict: bool = True,
                     part: str = "all"):
    """Load `states` into the chunks; a `part` load leaves exactly the other part untouched."""
    for chunk, state in zip(chunks, states, strict=True):
        model = unwrap(chunk)
        if part == "all":
            model.load_state_dict(state, strict=strict)
            continue
        other = "frozen" if part == "trainable" else "trainable"
        allowed = _flat_keys(select_part(model.sharded_state_dict(), other))
        result = model.load_state_dict(state, strict=False)
        wrong = sorted(set(result.missing_keys) - allowed) + sorted(result.unexpected_keys)
        if strict and wrong:
            raise CheckpointError(f"loading the {part} weights: keys missing or unexpected: "
                                  f"{wrong[:8]}")

