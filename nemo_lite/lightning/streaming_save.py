"""Save a sharded state dict whose tensors are produced one at a time, as the writer asks for them.

Why: importing a Hugging Face checkpoint must not hold the model twice (or even once). The
importer builds the megatron model on the meta device, so its sharded state dict has every key,
shape and sharding but no bytes, and gives one producer per parameter that computes its value
from the source files. This strategy is megatron's torch_dist save strategy with one change: the
tensors are written through torch DCP's `FileSystemWriter`, which resolves write items one by
one, and a planner whose `resolve_data` (torch's documented hook for producing an item's data)
calls the producer of the parameter behind each meta tensor and takes the same view of the
result. A value is kept only until its last write item is served (a byte budget caps what is
held), so a few parameters are in memory, not the model, and the files are the ordinary
torch_dist format that `dist_checkpointing.load` reads at any layout. `in_tensor_parallel_pieces`
cuts the TP-split weights into pieces first, so ranks that load at TP > 1 read only their part.

Used by `MegatronCheckpointIO.save_checkpoint(..., {"sharded_strategy": ...})`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

Producer = Callable[[], torch.Tensor]


def storage_key(tensor: torch.Tensor) -> int:
    """The identity of a tensor's storage: a parameter and every view of it share it (also on
    the meta device, where there is no data pointer)."""
    return tensor.untyped_storage()._cdata


class ProducedTensors:
    """The producers of a meta model's parameters, keyed by storage. Thread-safe: the writer's
    threads share the values made; a value is dropped once every write item cut from it was
    served (`count_uses`), and at most `keep_bytes` are held (the oldest go first, to be made
    again if asked for), so a parameter is made once while memory stays bounded. (The writer's
    threads take items in size order, so the pieces of one parameter can be far apart.)"""

    def __init__(self, producers: dict[torch.Tensor, Producer],
                 keep_bytes: int = 1024**3) -> None:
        self._producers = {storage_key(param): (param, make) for param, make in producers.items()}
        self._keep_bytes = keep_bytes
        self._values: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._uses: dict[int, int] = {}  # parameter storage -> write items not yet served
        self._lock = threading.Lock()
        # piece storage -> (the meta tensor it was cut from, axis, start, length)
        self._pieces: dict[int, tuple[torch.Tensor, int, int, int]] = {}

    def cut(self, meta: torch.Tensor, axis: int, start: int, length: int) -> torch.Tensor:
        """A meta tensor of its own standing for `meta.narrow(axis, start, length)`: made,
        when asked for, from `meta`'s value (a copy of the piece only)."""
        piece = torch.empty(meta.narrow(axis, start, length).shape, dtype=meta.dtype,
                            device="meta")
        self._pieces[storage_key(piece)] = (meta, axis, start, length)
        return piece

    def _root(self, key: int) -> int:
        return storage_key(self._pieces[key][0]) if key in self._pieces else key

    def count_uses(self, tensors: list[torch.Tensor]) -> None:
        """The meta tensors the writer will ask for (each once)."""
        for meta in tensors:
            root = self._root(storage_key(meta))
            self._uses[root] = self._uses.get(root, 0) + 1

    def resolve(self, meta: torch.Tensor) -> torch.Tensor:
        """The real tensor that the meta view `meta` stands for (one write item's data)."""
        value = self._resolve(meta)
        with self._lock:
            root = self._root(storage_key(meta))
            if root in self._uses:
                self._uses[root] -= 1
                if self._uses[root] <= 0:  # its last write item: no one asks for it again
                    self._values.pop(root, None)
        return value

    def _resolve(self, meta: torch.Tensor) -> torch.Tensor:
        key = storage_key(meta)
        if key in self._pieces:
            parent, axis, start, length = self._pieces[key]
            piece = self._resolve(parent).narrow(axis, start, length).contiguous()
            # a row piece is already contiguous: a view that starts inside its parent's storage
            return piece.as_strided(meta.size(), meta.stride(),
                                    piece.storage_offset() + meta.storage_offset())
        if key not in self._producers:
            raise KeyError(f"no producer for a meta tensor of shape {tuple(meta.shape)}")
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            else:
                value = self._make(key)
                if self._uses.get(key, 0) > 1:  # more write items will ask for it: keep it
                    while self._values and self._held() + value.nbytes > self._keep_bytes:
                        self._values.popitem(last=False)  # the oldest goes first
                    self._values[key] = value
        return value.as_strided(meta.size(), meta.stride(),
                                value.storage_offset() + meta.storage_offset())

    def _held(self) -> int:
        return sum(value.nbytes for value in self._values.values())

    def _make(self, key: int) -> torch.Tensor:
        param, make = self._producers[key]
        value = make()
        if value.shape != param.shape or value.dtype != param.dtype:
            raise ValueError(f"producer gave {tuple(value.shape)} {value.dtype} for a "
                             f"parameter of {tuple(param.shape)} {param.dtype}")
        return value.contiguous()

    def release(self) -> None:
        with self._lock:
            self._values.clear()


def streaming_save_strategy(tensors: ProducedTensors, threads: int = 2) -> Any:
    """megatron's torch_dist save strategy writing `tensors`' values for the meta tensors of the
    state dict it is given (`threads` files written side by side, a few tensors in memory)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor
    from megatron.core.dist_checkpointing.strategies import torch as mcore_torch
    from torch.distributed.checkpoint import FileSystemWriter
    from torch.distributed.checkpoint import save as dcp_save
    from torch.distributed.checkpoint.api import CheckpointException

    class ProducingPlanner(mcore_torch.MCoreSavePlanner):
        def resolve_data(self, write_item: Any) -> Any:
            found = self.lookup_object(write_item.index)
            if isinstance(found, torch.Tensor) and found.device.type == "meta":
                return tensors.resolve(found)
            return super().resolve_data(write_item)

    class StreamingSaveStrategy(mcore_torch.TorchDistSaveShardedStrategy):
        def save(self, sharded_state_dict: Any, checkpoint_dir: str | Path) -> None:
            state, _, _ = mcore_torch._replace_state_dict_keys_with_sharded_keys(
                sharded_state_dict, keep_only_main_replica=True)
            tensors.count_uses([value.data for value in nested_values(state)
                                if isinstance(value, ShardedTensor) and value.data is not None
                                and value.data.device.type == "meta"])
            writer = FileSystemWriter(str(checkpoint_dir), single_file_per_rank=True,
                                      sync_files=False, thread_count=threads)
            try:
                dcp_save(mcore_torch.mcore_to_pyt_state_dict(state, False),
                         storage_writer=writer, planner=ProducingPlanner(
                             dedup_replicated_tensors=False, flatten_state_dict=False))
            except CheckpointException as error:  # one rank here: raise what went wrong
                failure = next(iter(error.failures.values()))
                raise (failure[0] if isinstance(failure, tuple) else failure) from None
            finally:
                tensors.release()

    return StreamingSaveStrategy("torch_dist", 1)


def tensor_parallel_axes(model: torch.nn.Module) -> dict[torch.Tensor, int]:
    """Each tensor-parallel weight of `model` -> the axis megatron splits it along (column-
    parallel linears and the vocab embedding: rows; row-parallel linears: columns). Read from
    the module types, which a model built without initialisation still has (megatron sets its
    `partition_dim` marks only when it initialises)."""
    from megatron.core.tensor_parallel.layers import (
        ColumnParallelLinear,
        RowParallelLinear,
        VocabParallelEmbedding,
    )

    axes: dict[torch.Tensor, int] = {}
    for module in model.modules():
        mode = getattr(module, "parallel_mode", None)  # transformer-engine's linears
        if isinstance(module, (ColumnParallelLinear, VocabParallelEmbedding)) or mode == "column":
            axes.update({p: 0 for p in (getattr(module, "weight", None),
                                        getattr(module, "bias", None))
                         if isinstance(p, torch.Tensor) and p.dim() >= 1})
        elif isinstance(module, RowParallelLinear) or mode == "row":
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() == 2:
                axes[weight] = 1
    return axes


def in_tensor_parallel_pieces(sharded_state_dict: dict[str, Any], axes: dict[torch.Tensor, int],
                              tensors: ProducedTensors, pieces: int = 8) -> dict[str, Any]:
    """The state dict with every tensor-parallel weight saved as `pieces` chunks along its
    partition axis (fewer when the axis does not divide: 4, 2, else one), as if saved at TP =
    `pieces`. torch DCP reads a saved chunk whole, so a checkpoint written at TP1 in one chunk
    per tensor costs a TP=t rank t times what it holds; in pieces, a rank at any TP dividing
    `pieces` reads only its own bytes. `axes`: `tensor_parallel_axes(model)`; each piece is
    cut through `tensors` (its value a copy of that piece of its parameter's)."""
    from megatron.core.dist_checkpointing.dict_utils import dict_list_map_inplace
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

    axes = {storage_key(param): axis for param, axis in axes.items()}
    apply_factories(sharded_state_dict)  # SwiGLU halves, vocab rows: plain ShardedTensors now

    def split(value: Any) -> Any:
        if not isinstance(value, ShardedTensor) or value.flattened_range is not None:
            return value
        fragments = value.axis_fragmentations
        if fragments is None:  # no grid given (the vocab tensors): one whole tensor is one
            if tuple(value.local_shape) != tuple(value.global_shape) or value.prepend_axis_num:
                return value
            fragments = (1,) * len(value.global_shape)
        axis = axes.get(storage_key(value.data)) if value.data is not None else None
        if axis is None:
            return value
        size = value.local_shape[axis]
        count = next((n for n in (pieces, 4, 2) if n <= pieces and size % n == 0), 1)
        if count == 1:
            return value
        at = axis + value.prepend_axis_num  # the axis among the global dimensions
        step = size // count
        return [dataclasses.replace(
            value, data=tensors.cut(value.data, axis, i * step, step),
            local_shape=value.local_shape[:axis] + (step,) + value.local_shape[axis + 1:],
            global_offset=value.global_offset[:at] + (value.global_offset[at] + i * step,)
            + value.global_offset[at + 1:],
            axis_fragmentations=fragments[:at] + (fragments[at] * count,) + fragments[at + 1:])
            for i in range(count)]

    return dict_list_map_inplace(split, sharded_state_dict)
