"""Random-number state of every rank, saved with a checkpoint so a resumed run draws the same numbers.

Python, numpy, torch (CPU and, on GPU, CUDA) generators and megatron's tensor-parallel RNG
tracker. Stored as one megatron ShardedObject per global rank: it reloads only into the same
world size and layout (a resharded load keeps the freshly seeded state instead).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["accelerator"] = torch.cuda.get_rng_state()
    return state


def restore(state: dict[str, Any]) -> None:
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "accelerator" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["accelerator"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def _as_tuples(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


def sharded(state: dict[str, Any] | None = None) -> Any:
    """This rank's RNG state as a ShardedObject keyed by global rank."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    world = torch.distributed.get_world_size()
    rank = torch.distributed.get_rank()
    return ShardedObject("rng_state", state if state is not None else capture(), (world,), (rank,),
                         replica_id=0)
