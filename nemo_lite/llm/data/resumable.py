"""Where a data module is in its sample stream, saved with each checkpoint.

Megatron's sampler starts from `consumed_samples`; a resumed run sets it from the checkpoint
so it continues with the exact next global batch (the same sample order as an uninterrupted
run), whatever the new data-parallel layout.
"""

from __future__ import annotations

from typing import Any


def data_parallel_rank_and_size() -> tuple[int, int]:
    """This rank's place among the data-parallel ranks (0 of 1 outside a run)."""
    import torch.distributed as dist
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        return (parallel_state.get_data_parallel_rank(),
                parallel_state.get_data_parallel_world_size())
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ResumableDataMixin:
    """For a LightningDataModule with `global_batch_size`; Lightning calls state_dict/load_state_dict."""

    init_consumed_samples: int = 0
    init_global_step: int = 0
    batch_ramp: Any = None  # a BatchRamp when rampup_batch_size is set

    def init_batching(self, *, seq_length: int, tokenizer: Any, micro_batch_size: int,
                      global_batch_size: int, rampup_batch_size: Any, num_workers: int,
                      pin_memory: bool, persistent_workers: bool) -> None:
        """The arguments every data module shares (NeMo's names), set once here."""
        from nemo_lite.lightning.batch_ramp import BatchRamp
        from nemo_lite.llm.tokenizer import get_tokenizer

        self.batch_ramp = BatchRamp.parse(rampup_batch_size, global_batch_size)
        self.rampup_batch_size = None if rampup_batch_size is None else list(rampup_batch_size)
        self.seq_length = seq_length
        self.tokenizer = get_tokenizer(tokenizer or "byte")  # a path or "byte" too
        self.micro_batch_size = micro_batch_size
        self.global_batch_size = global_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0

    def consumed_samples(self, global_step: int | None = None) -> int:
        if global_step is None:
            trainer = getattr(self, "trainer", None)
            global_step = trainer.global_step if trainer is not None else self.init_global_step
        if self.batch_ramp is not None:  # each step's global batch follows the ramp
            return self.batch_ramp.consumed_after(global_step, self.init_global_step,
                                                  self.init_consumed_samples)
        return self.init_consumed_samples + (global_step - self.init_global_step) * self.global_batch_size

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        step = trainer.global_step if trainer is not None else self.init_global_step
        return {"consumed_samples": self.consumed_samples(step), "global_step": step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.init_consumed_samples = int(state_dict["consumed_samples"])
        self.init_global_step = int(state_dict["global_step"])

    def megatron_loader(self, dataset: Any, consumed: int, training: bool) -> Any:
        """A DataLoader over `dataset` with Megatron's batch sampler from `consumed` samples:
        this rank's micro-batches of each global batch. Training drops an incomplete last
        global batch and is unsized (see UnsizedBatches: exact resume); evaluation keeps it,
        padded with samples that carry no loss. Uses the module's micro_batch_size,
        num_workers, pin_memory, persistent_workers."""
        from torch.utils.data import DataLoader

        from nemo_lite.lightning.sampler import MegatronPretrainingBatchSampler, UnsizedBatches

        rank, size = data_parallel_rank_and_size()
        sampler: Any = MegatronPretrainingBatchSampler(
            total_samples=len(dataset), consumed_samples=consumed,
            micro_batch_size=self.micro_batch_size, global_batch_size=self.global_batch_size,
            data_parallel_rank=rank, data_parallel_size=size, drop_last=training,
            ramp=self.batch_ramp if training else None)
        if training:
            sampler = UnsizedBatches(sampler)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.persistent_workers)
