"""megatron's DistributedDataParallel for the model chunks: which config, the wrap, and the
hooks megatron's schedule needs from it (what megatron-LM's own training loop sets).

The user's `MegatronStrategy(ddp=...)` stays as given; the config a run wraps with is made from
it once, at setup: callbacks' overrides (`override_ddp`), then the optimizer's choice of
distributed optimizer and the precision's gradient-reduction dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def user_ddp_config(ddp: Any, overrides: dict[str, Any]) -> Any:
    """`ddp` ("megatron" = megatron's defaults + NaN checks, or a DistributedDataParallelConfig)
    as a new dataclass with `overrides` applied."""
    from megatron.core.distributed import DistributedDataParallelConfig

    if ddp == "megatron" or ddp is None:
        ddp = DistributedDataParallelConfig(check_for_nan_in_grad=True)
    if not isinstance(ddp, DistributedDataParallelConfig):
        raise ValueError(
            f"ddp={ddp!r}: pass 'megatron' or a megatron DistributedDataParallelConfig.")
    return dataclasses.replace(ddp, **overrides)


def final_ddp_config(ddp: Any, optim_config: Any, precision: Any) -> Any:
    """The config the chunks are wrapped with: the optimizer decides use_distributed_optimizer,
    the precision plugin the reduction dtype and NaN checks."""
    if optim_config is not None:
        ddp.use_distributed_optimizer = bool(optim_config.use_distributed_optimizer)
    precision.configure_ddp(ddp)
    return ddp


def wrap_in_ddp(chunks: list[Any], config: Any, ddp: Any) -> list[Any]:
    """One megatron DDP per virtual-pipeline chunk (buckets only on the first, as megatron-LM)."""
    from megatron.core.distributed import DistributedDataParallel

    return [DistributedDataParallel(config, ddp, module=chunk, disable_bucketing=(i > 0))
            for i, chunk in enumerate(chunks)]


def connect_to_schedule(config: Any, optimizer: Any, chunks: list[Any], ddp: Any) -> None:
    """Hand megatron's schedule the hooks its own training loop would set."""
    from megatron.core.distributed import finalize_model_grads

    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.mcore.scale_loss
    if ddp.overlap_grad_reduce:
        no_sync = [chunk.no_sync for chunk in chunks]
        config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    if ddp.overlap_param_gather and ddp.use_distributed_optimizer and ddp.align_param_gather:
        # megatron-LM's rule: the schedule dispatches the all-gathers only when aligned;
        # otherwise each chunk's forward pre-hooks do.
        sync = [chunk.start_param_sync for chunk in chunks]
        config.param_sync_func = sync[0] if len(sync) == 1 else sync


def finish_param_gather(chunks: Any) -> None:
    """overlap_param_gather leaves other DP ranks' updated shards stale until the next forward:
    gather them now, as megatron-LM does before saving (1e-3 stale otherwise)."""
    for chunk in chunks:
        if getattr(chunk, "use_forward_hook", False):
            chunk.start_param_sync(force_sync=True)
