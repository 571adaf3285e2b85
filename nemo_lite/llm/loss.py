"""Token-masked language-model loss, reduced exactly across micro-batches and ranks.

Each micro-batch reports (sum of masked token losses, number of unmasked tokens). Megatron
back-propagates the sum and divides gradients by the global token count (per-token loss),
so the step is the same token mean whatever the layout; `reduce` reports that same mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nemo_lite.lightning.parallel import MegatronLossReduction


class MaskedTokenLossReduction(MegatronLossReduction):
    """Mean of per-token losses over tokens whose loss_mask is 1, across DP and CP ranks.

    `validation_step=True` marks the instance used under `forward_only`; the math is the same,
    and padded samples at the end of a validation set (loss_mask all 0) add no tokens, which is
    how the last, incomplete validation batch is kept instead of dropped.
    """

    def __init__(self, validation_step: bool = False) -> None:
        self.validation_step = validation_step

    def forward(
        self, batch: dict[str, Any], forward_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        losses = forward_out.float().reshape(-1)
        mask = batch["loss_mask"].to(losses.device).float().reshape(-1)
        if losses.numel() != mask.numel():
            raise ValueError(
                f"forward output has {losses.numel()} per-token losses but loss_mask has "
                f"{mask.numel()} entries: the forward step must return per-token losses [b, s]."
            )
        loss_sum = torch.dot(losses, mask)
        num_tokens = mask.sum().to(torch.int)
        report = torch.stack([loss_sum.detach(), mask.sum().detach()])
        return loss_sum, num_tokens, {"loss_sum_and_tokens": report}

    def reduce(
        self, outputs: Sequence[dict[str, torch.Tensor]], group: Any = None
    ) -> torch.Tensor:
        """Token mean over this step's micro-batches, summed over `group` (DP x CP ranks)."""
        if not outputs:
            return torch.tensor(0.0)
        total = torch.stack([out["loss_sum_and_tokens"] for out in outputs]).sum(dim=0)
        if group is not None and torch.distributed.get_world_size(group) > 1:
            torch.distributed.all_reduce(total, group=group)
        loss_sum, tokens = total[0], total[1]
        return loss_sum / tokens if tokens > 0 else torch.zeros_like(loss_sum)
