"""What differs between the megatron-core releases nemo_lite runs on, in one place.

Supported: 0.16.x (Python 3.11, CI's main stack) and 0.19.x (Python 3.12). Each function below
hides one API difference, names the upstream code it targets and what changed; callers use it
instead of the megatron function. CPU redirections that depend on the release are keyed by
`at_least(...)` in `_cpu.py` / `_cpu_moe.py`.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def mcore_version() -> tuple[int, int, int]:
    from importlib.metadata import version

    parts = (version("megatron-core").split("+")[0].split(".") + ["0", "0"])[:3]
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts)  # type: ignore[return-value]


def at_least(release: str) -> bool:
    """Whether the installed megatron-core is `release` (e.g. "0.19") or newer."""
    wanted = tuple(int(p) for p in (release.split(".") + ["0", "0"])[:3])
    return mcore_version() >= wanted


def batch_on_this_cp_rank(batch: dict[str, Any]) -> dict[str, Any]:
    """`megatron.core.utils.get_batch_on_this_cp_rank`: this CP rank's slice of a batch.

    0.16: `(batch)`, reading the CP group from parallel_state. 0.19: `(batch, is_hybrid_cp,
    cp_group=None, ...)`: `is_hybrid_cp` (required) selects a hybrid-CP partitioning nemo_lite
    does not use, and a None `cp_group` means the *world* group (every rank would cut the
    sequence as if all ranks were CP ranks), so the CP group is passed.
    """
    from megatron.core.utils import get_batch_on_this_cp_rank

    if at_least("0.19"):
        from megatron.core import parallel_state

        return get_batch_on_this_cp_rank(
            batch, is_hybrid_cp=False, cp_group=parallel_state.get_context_parallel_group())
    return get_batch_on_this_cp_rank(batch)


def async_save_kwargs() -> dict[str, Any]:
    """Extra arguments of `dist_checkpointing.save(..., async_sharded_save=True)`.

    0.19 adds `async_strategy`, defaulting to "nvrx" (nvidia-resiliency-ext, not a megatron
    dependency: ModuleNotFoundError without it); "mcore" is 0.16's built-in async writer.
    """
    return {"async_strategy": "mcore"} if at_least("0.19") else {}
