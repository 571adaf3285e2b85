"""Which megatron DDP settings fit the model's loss and the optimizer: pure rules, checked before
any rank is launched (the CLI's plan, `nl.Trainer.fit`) and again on every rank.

Megatron asserts some of these deep inside `DistributedDataParallel.__init__` on every rank
("Cannot average in collective when calculating per-token loss!") and silently ignores others;
here each conflict is one `LayoutError` naming both settings and the fix. Objects are read by
attribute, so megatron dataclasses and Fiddle configs alike can be checked (no torch import).
"""

from __future__ import annotations

import warnings
from typing import Any

from nemo_lite.lightning.layout import LayoutError


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return getattr(obj, name, default) if obj is not None else default


def check_ddp(ddp: Any, model_config: Any = None, optim_config: Any = None) -> None:
    """Raise LayoutError for a DDP config that cannot work with this model / optimizer; warn
    for settings that would have no effect. `ddp` None or "megatron": megatron's defaults."""
    if ddp is None or isinstance(ddp, str):
        return
    per_token = bool(_get(model_config, "calculate_per_token_loss", False))
    if per_token and _get(ddp, "average_in_collective", False):
        raise LayoutError(
            "DistributedDataParallelConfig(average_in_collective=True) cannot be combined with "
            "the model's calculate_per_token_loss=True (nemo_lite's default: gradients divided "
            "by the global token count, an exact token mean on any layout): set "
            "average_in_collective=False, or calculate_per_token_loss=False on the model config.")
    distributed = _get(optim_config, "use_distributed_optimizer", None)
    if distributed is False and (_get(ddp, "num_distributed_optimizer_instances", 1) or 1) > 1:
        raise LayoutError(
            f"DistributedDataParallelConfig(num_distributed_optimizer_instances="
            f"{_get(ddp, 'num_distributed_optimizer_instances')}) needs the distributed "
            "optimizer: set OptimizerConfig(use_distributed_optimizer=True) or "
            "num_distributed_optimizer_instances=1.")
    if distributed is False and _get(ddp, "overlap_param_gather", False):
        warnings.warn(
            "DistributedDataParallelConfig(overlap_param_gather=True) has no effect without the "
            "distributed optimizer (OptimizerConfig(use_distributed_optimizer=False)): there "
            "are no parameter shards to gather.", stacklevel=2)
