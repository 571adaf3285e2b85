"""Where a data module is in its sample stream, saved with each checkpoint.

Megatron's sampler starts from `consumed_samples`; a resumed run sets it from the checkpoint
so it continues with the exact next global batch (the same sample order as an uninterrupted
run), whatever the new data-parallel layout.
"""

from __future__ import annotations

import warnings
from typing import Any


class ResumableDataMixin:
    """For a LightningDataModule with `global_batch_size`; Lightning calls state_dict/load_state_dict."""

    init_consumed_samples: int = 0
    init_global_step: int = 0

    def consumed_samples(self, global_step: int | None = None) -> int:
        if global_step is None:
            trainer = getattr(self, "trainer", None)
            global_step = trainer.global_step if trainer is not None else self.init_global_step
        return self.init_consumed_samples + (global_step - self.init_global_step) * self.global_batch_size

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        step = trainer.global_step if trainer is not None else self.init_global_step
        return {"consumed_samples": self.consumed_samples(step), "global_step": step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.init_consumed_samples = int(state_dict["consumed_samples"])
        self.init_global_step = int(state_dict["global_step"])
        # Lightning warns that a mid-epoch resume with a plain DataLoader repeats data; the
        # sampler restarting at `consumed_samples` is what makes it exact here.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
