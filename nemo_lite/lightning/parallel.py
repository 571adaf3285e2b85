"""MegatronParallel: this rank's model chunks plus the three steps Megatron's schedule runs.

The schedule (no pipelining, 1F1B or interleaved, chosen by megatron from parallel_state)
calls, for every micro-batch and model chunk:
    batch = data_step(data_iterator)          # fetch + move + CP-slice one micro-batch
    out = forward_step(chunk, batch)          # run the chunk
    loss_reduction.forward(batch, out)        # last stage: (loss_sum, num_tokens, report)
and `loss_reduction.reduce(reports)` turns the step's reports into one number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


class MegatronLossReduction:
    """Contract of a loss reduction: per micro-batch `forward`, per step `reduce`."""

    def forward(
        self, batch: dict[str, Any], forward_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Return (loss to back-propagate, token count as int tensor, report for `reduce`)."""
        raise NotImplementedError

    def reduce(self, outputs: Sequence[dict[str, torch.Tensor]], group: Any = None) -> torch.Tensor:
        """Combine one step's reports (all micro-batches of this rank) across `group`."""
        raise NotImplementedError


DataStep = Callable[[Iterator[Any]], dict[str, Any]]
ForwardStep = Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor]


def _step_fn(data_step: DataStep, forward_step: ForwardStep,
             loss_reduction: MegatronLossReduction) -> Callable[[Iterator[Any], Any], Any]:
    """The forward_step_func megatron's schedule calls per micro-batch and chunk."""

    def step(data_iterator, chunk):
        batch = data_step(data_iterator)
        return forward_step(chunk, batch), functools.partial(loss_reduction.forward, batch)

    return step


class MegatronParallel(torch.nn.ModuleList):
    """Holds one chunk per virtual-pipeline stage (DDP-wrapped) and runs forward-backward with
    the steps it is given (the model's, read by the strategy at each step)."""

    def __init__(self, chunks: Sequence[torch.nn.Module]) -> None:
        super().__init__(chunks)

    def forward(
        self,
        data: Iterator[Any],
        *,
        data_step: DataStep,
        forward_step: ForwardStep,
        loss_reduction: MegatronLossReduction,
        forward_only: bool,
        num_microbatches: int,
        seq_length: int,
        micro_batch_size: int,
    ) -> torch.Tensor:
        """One global batch through Megatron's schedule; returns the reduced loss on every rank.

        Batch contract: `data` yields this rank's micro-batches in order (dicts of tensors, or
        Lightning's (batch, batch_idx, dataloader_idx) tuples); `num_microbatches` of them make
        one step, and `data_step` turns each into what `forward_step` feeds the chunk."""
        from megatron.core import parallel_state
        from megatron.core.pipeline_parallel import get_forward_backward_func

        # Every chunk consumes the same micro-batches in order: fetch them once, replay per chunk.
        micro_batches = [next(data) for _ in range(num_microbatches)]
        iterators = [iter(micro_batches) for _ in self]
        outputs = get_forward_backward_func()(
            forward_step_func=_step_fn(data_step, forward_step, loss_reduction),
            data_iterator=iterators if len(self) > 1 else iterators[0],
            model=list(self),
            num_microbatches=num_microbatches,
            seq_length=seq_length,
            micro_batch_size=micro_batch_size,
            forward_only=forward_only,
        )
        if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
            group = parallel_state.get_data_parallel_group(with_context_parallel=True)
            loss = loss_reduction.reduce(outputs, group=group).detach().float()
        else:
            loss = torch.zeros((), dtype=torch.float32)
        return _share_from_last_stage(loss)


def _share_from_last_stage(loss: torch.Tensor) -> torch.Tensor:
    """Give every pipeline stage the last stage's loss (for logging and checkpoint naming)."""
    from megatron.core import parallel_state

    from nemo_lite.lightning.device import compute_device

    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return loss
    loss = loss.to(compute_device()).reshape(1)
    if not parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        loss.zero_()
    torch.distributed.all_reduce(loss, group=parallel_state.get_pipeline_model_parallel_group())
    return loss[0]
