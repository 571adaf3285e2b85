"""Trainer: Lightning's Trainer with the defaults a Megatron run needs.

Only defaults change: Megatron's sampler already shards data over data-parallel ranks
(so Lightning must not add a DistributedSampler), evaluation runs under no_grad rather than
inference_mode (megatron modules keep state between steps), and Lightning's own
checkpointing stays off until MegatronStrategy's distributed checkpoint IO takes over.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class Trainer(pl.Trainer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("use_distributed_sampler", False)
        kwargs.setdefault("inference_mode", False)
        kwargs.setdefault("enable_checkpointing", False)
        kwargs.setdefault("logger", False)
        super().__init__(*args, **kwargs)
