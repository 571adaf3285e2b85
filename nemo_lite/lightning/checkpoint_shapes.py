"""Before a load: does every tensor the model asks for have the shape the checkpoint saved?

dist_checkpointing would fail on the first mismatch with a message about one rank's read plan;
checking the request against the checkpoint's metadata first names the tensor and both shapes,
on every rank alike (a mismatch on one rank stops all of them, none is left waiting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def _requested_tensors(state: Any) -> list[Any]:
    """The ShardedTensors a sharded state dict asks for (factories built, nothing loaded)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    found = []
    for value in nested_values(state):
        if isinstance(value, ShardedTensorFactory):
            found.extend(_requested_tensors({"built": value.build()}))
        elif isinstance(value, ShardedTensor):
            found.append(value)
    return found


def shape_mismatches(sharded_state_dict: dict[str, Any], weights_dir: Path) -> list[str]:
    """One line per tensor whose saved global shape differs from the requested one (this rank)."""
    from megatron.core.dist_checkpointing.serialization import load_tensors_metadata

    saved = load_tensors_metadata(str(weights_dir))
    problems = {}
    for tensor in _requested_tensors(sharded_state_dict):
        old = saved.get(tensor.key)
        if old is None or tensor.allow_shape_mismatch:
            continue
        old_shape, new_shape = tuple(old.global_shape), tuple(tensor.global_shape)
        if old_shape != new_shape and tensor.key not in problems:
            problems[tensor.key] = _describe(tensor.key, old_shape, new_shape)
    # model tensors first: an optimizer state's mismatch follows from its parameter's
    return [problems[k] for k in sorted(problems, key=lambda k: (k.startswith("optimizer"), k))]


def _describe(key: str, old: tuple[int, ...], new: tuple[int, ...]) -> str:
    line = f"tensor '{key}' is {list(old)} in the checkpoint and {list(new)} in this model"
    vocab_tensor = key.endswith(("word_embeddings.weight", "output_layer.weight"))
    if vocab_tensor and len(old) == len(new) and old[1:] == new[1:]:
        line += f" (the vocabulary: {old[0]} ids saved, {new[0]} here)"
    return line


def agreed_mismatches(sharded_state_dict: dict[str, Any], weights_dir: Path) -> list[str]:
    """`shape_mismatches` of every rank, the same list on all of them (collective)."""
    mine = shape_mismatches(sharded_state_dict, weights_dir)
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return mine
    everyone: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, mine)
    merged: list[str] = []
    for lines in everyone:
        merged.extend(line for line in lines if line not in merged)
    return merged
