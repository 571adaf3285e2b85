"""Ramp-up batch size: megatron's schedule of global batch sizes, checked before launch.

NeMo's `rampup_batch_size=[start, increment, ramp_samples]` (megatron's `--rampup-batch-size`):
training starts with global batches of `start` samples, and the size grows by `increment` each
time another `ramp_samples / ((global_batch_size - start) / increment)` samples have been consumed,
until it reaches `global_batch_size` (after `ramp_samples` samples). Each step's size follows from
the samples consumed before it, so a run resumed mid-ramp (its checkpoint holds the consumed
samples) continues with the same sizes and the same samples.

`global_batch_at` is megatron-core 0.17's `RampupBatchsizeNumMicroBatchesCalculator.update`
rule (0.19 dropped that class for a threshold schedule; tests/unit/test_batch_ramp.py checks this
rule against the 0.17 class). Pure rules, like `layout.py`: checked by the strategy before any
rank starts and again on every rank; the sampler, the training step and the data module's count
of consumed samples all read the sizes from here. Validation and test steps keep the full global
batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


class RampError(ValueError):
    """A ramp-up batch size that cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class BatchRamp:
    start: int
    increment: int
    ramp_samples: int
    global_batch_size: int

    @classmethod
    def parse(cls, rampup_batch_size: Any, global_batch_size: int) -> Optional[BatchRamp]:
        """None for no ramp; else the checked ramp (RampError names what is wrong)."""
        if rampup_batch_size is None:
            return None
        values = list(rampup_batch_size) if isinstance(rampup_batch_size, (list, tuple)) else []
        if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in values):
            raise RampError(f"rampup_batch_size={rampup_batch_size!r}: give three integers "
                            "[start, increment, ramp_samples] (megatron's --rampup-batch-size), "
                            "e.g. [4, 4, 1000].")
        start, increment, samples = values
        if min(values) < 1:
            raise RampError(f"rampup_batch_size={values}: start, increment and ramp_samples "
                            "must each be >= 1.")
        if start >= global_batch_size:
            raise RampError(f"rampup_batch_size starts at {start}, not below global_batch_size="
                            f"{global_batch_size}: start from a smaller global batch, or drop "
                            "rampup_batch_size.")
        if (global_batch_size - start) % increment:
            raise RampError(f"rampup_batch_size={values}: global_batch_size - start = "
                            f"{global_batch_size - start} is not a multiple of the increment "
                            f"{increment}; pick an increment that divides it.")
        return cls(start, increment, samples, global_batch_size)

    def sizes(self) -> list[int]:
        """Every global batch size of the ramp, the final one included."""
        return list(range(self.start, self.global_batch_size + 1, self.increment))

    def check(self, micro_batch_size: int, data_parallel_size: int,
              microbatch_multiple: int = 1) -> None:
        """Every size must split into micro-batches on every data-parallel rank (and, for the
        interleaved pipeline schedule, into a multiple of `microbatch_multiple` of them)."""
        unit = micro_batch_size * data_parallel_size
        odd = [s for s in self.sizes() if s % unit]
        if odd:
            raise RampError(
                f"rampup_batch_size=[{self.start}, {self.increment}, {self.ramp_samples}] reaches "
                f"a global batch of {odd[0]}, which micro_batch_size ({micro_batch_size}) x data "
                f"parallel size ({data_parallel_size}) = {unit} does not divide: use a start and "
                f"an increment that are multiples of {unit}.")
        uneven = [s for s in self.sizes() if (s // unit) % microbatch_multiple]
        if uneven:
            raise RampError(
                f"rampup_batch_size reaches a global batch of {uneven[0]} = {uneven[0] // unit} "
                f"micro-batches; the interleaved pipeline schedule needs a multiple of "
                f"{microbatch_multiple}: use a start and an increment that are multiples of "
                f"{unit * microbatch_multiple}.")

    def global_batch_at(self, consumed_samples: int) -> int:
        """The global batch of the step that starts after `consumed_samples` samples."""
        if consumed_samples > self.ramp_samples:
            return self.global_batch_size
        increments = (self.global_batch_size - self.start) // self.increment
        per_increment = self.ramp_samples / increments
        return self.start + int(consumed_samples / per_increment) * self.increment

    def consumed_after(self, steps: int, from_step: int = 0, from_consumed: int = 0) -> int:
        """Samples consumed after `steps` training steps, counting on from `from_consumed`
        samples at step `from_step`."""
        consumed, step = from_consumed, from_step
        while step < steps and consumed <= self.ramp_samples:  # the ramp: one step at a time
            consumed += self.global_batch_at(consumed)
            step += 1
        return consumed + max(steps - step, 0) * self.global_batch_size

    def describe(self, micro_batch_size: int, data_parallel_size: int) -> str:
        """One line for the launch plan and the start-of-run summary."""
        unit = micro_batch_size * data_parallel_size
        steps = 0
        consumed = 0
        while consumed <= self.ramp_samples and self.global_batch_at(consumed) < \
                self.global_batch_size:
            consumed += self.global_batch_at(consumed)
            steps += 1
        return (f"global batch {self.start} -> {self.global_batch_size} by {self.increment} over "
                f"{self.ramp_samples} samples ({steps} steps; micro-batches per step "
                f"{self.start // unit} -> {self.global_batch_size // unit})")
