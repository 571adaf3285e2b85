"""Megatron's pretraining batch sampler: micro-batches of one data-parallel rank, resumable.

Sample order is global: global batch k holds samples [k*G, (k+1)*G). It is cut into
micro-batches of `micro_batch_size * dp_size` consecutive samples, and rank r takes slice
r of each, so every data-parallel layout sees the same global batches (the basis of the
parity tests). `consumed_samples` says where to start, which is how a resumed run continues
from the exact next sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nemo_lite.lightning.batch_ramp import BatchRamp

PAD_INDEX = -1  # a sample index that datasets turn into an all-masked sample


class MegatronPretrainingBatchSampler:
    def __init__(
        self,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        global_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
        drop_last: bool = True,
        ramp: BatchRamp | None = None,
    ) -> None:
        if total_samples <= 0:
            raise ValueError(f"no samples to draw from (total_samples={total_samples}).")
        if global_batch_size % (micro_batch_size * data_parallel_size) != 0:
            raise ValueError(
                f"global_batch_size={global_batch_size} is not divisible by micro_batch_size "
                f"({micro_batch_size}) x data parallel size ({data_parallel_size})."
            )
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"data_parallel_rank={data_parallel_rank} not in [0, {data_parallel_size}).")
        if ramp is not None:
            if not drop_last:
                raise ValueError("a ramp-up batch size applies to training (drop_last=True) only.")
            ramp.check(micro_batch_size, data_parallel_size)
        self.ramp = ramp
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.drop_last = drop_last

    @property
    def _stride(self) -> int:
        return self.micro_batch_size * self.data_parallel_size

    def __len__(self) -> int:
        """Micro-batches this rank yields from `consumed_samples` to the end."""
        if self.ramp is not None:
            return sum(1 for _ in self._ramp_windows())
        remaining = max(self.total_samples - self.consumed_samples % self.total_samples, 0)
        if self.drop_last:
            full = remaining // self.global_batch_size * self.global_batch_size
        else:
            full = -(-remaining // self.global_batch_size) * self.global_batch_size
        return full // self._stride

    def __iter__(self) -> Iterator[list[int]]:
        start = self.consumed_samples % self.total_samples
        lo = self.data_parallel_rank * self.micro_batch_size
        firsts = (self._ramp_windows() if self.ramp is not None else
                  range(start, start + len(self) * self._stride, self._stride))
        for first in firsts:
            window = [i if i < self.total_samples else PAD_INDEX for i in range(first, first + self._stride)]
            yield window[lo : lo + self.micro_batch_size]

    def _ramp_windows(self) -> Iterator[int]:
        """The first sample of each micro-batch window of whole ramp steps: each step's global
        batch follows from the samples consumed before it; a step that would run past the end
        of the samples is dropped whole."""
        assert self.ramp is not None
        consumed = self.consumed_samples
        position = consumed % self.total_samples
        while True:
            size = self.ramp.global_batch_at(consumed)
            if position + size > self.total_samples:
                return
            yield from range(position, position + size, self._stride)
            position += size
            consumed += size


class UnsizedBatches:
    """Megatron's batch sampler without a length, for training.

    Lightning counts steps while the sampler yields micro-batches (several per step); given a
    length, a resumed run adds its restored step count to the micro-batches it fetches, ends the
    epoch before the samples run out and restarts the sampler: samples repeat. Unsized, the
    epoch ends only when the samples do, and training at max_steps.
    """

    def __init__(self, sampler: MegatronPretrainingBatchSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.sampler)


@dataclass(frozen=True)
class EvalLimits:
    """The trainer's `limit_val_batches` / `limit_test_batches` as the user gave them: in steps
    (global batches) for an int, a fraction of the loader for a float."""

    val: int | float
    test: int | float


def count_eval_limits_in_global_batches(trainer: Any, num_microbatches: int,
                                        user_limits: EvalLimits | None = None) -> EvalLimits:
    """`limit_val_batches=N` means N validation steps (global batches); Lightning counts the
    loader's items, which are micro-batches here (each step pulls all of its own).

    Sets the trainer's limits to `user_limits` (read from the trainer when None: the first
    setup) times `num_microbatches`, and returns the user's limits for the caller to keep, so a
    second setup (validate after fit) scales the user's values, not already-scaled ones."""
    limits = user_limits or EvalLimits(trainer.limit_val_batches, trainer.limit_test_batches)
    for name, limit in (("limit_val_batches", limits.val), ("limit_test_batches", limits.test)):
        if isinstance(limit, int) and limit > 0:
            setattr(trainer, name, limit * num_microbatches)
    return limits
