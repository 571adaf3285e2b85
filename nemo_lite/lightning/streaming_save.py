"""Save a sharded state dict whose tensors are produced one at a time, as the writer asks for them.

Why: importing a Hugging Face checkpoint must not hold the model twice (or even once). The
importer builds the megatron model on the meta device, so its sharded state dict has every key,
shape and sharding but no bytes, and gives one producer per parameter that computes its value
from the source files. This strategy is megatron's torch_dist save strategy with one change: the
tensors are written through torch DCP's `FileSystemWriter`, which resolves write items one by
one, and a planner whose `resolve_data` (torch's documented hook for producing an item's data)
calls the producer of the parameter behind each meta tensor and takes the same view of the
result. So at most one parameter (plus the view being written) is in memory, and the files are
the ordinary torch_dist format that `dist_checkpointing.load` reads at any layout.

Used by `MegatronCheckpointIO.save_checkpoint(..., {"sharded_strategy": ...})`.
"""

from __future__ import annotations

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
    threads share the last `keep` values made (the halves of a fused SwiGLU weight are asked for
    one after the other, often by different threads), so each parameter is made once."""

    def __init__(self, producers: dict[torch.Tensor, Producer], keep: int = 2) -> None:
        self._producers = {storage_key(param): (param, make) for param, make in producers.items()}
        self._keep = keep
        self._values: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, meta: torch.Tensor) -> torch.Tensor:
        """The real tensor that the meta view `meta` stands for."""
        key = storage_key(meta)
        if key not in self._producers:
            raise KeyError(f"no producer for a meta tensor of shape {tuple(meta.shape)}")
        with self._lock:
            value = self._values.get(key)
            if value is None:
                while len(self._values) >= self._keep:  # drop the oldest before making one
                    self._values.popitem(last=False)
                value = self._values[key] = self._make(key)
            else:
                self._values.move_to_end(key)
        return value.as_strided(meta.size(), meta.stride(), meta.storage_offset())

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
