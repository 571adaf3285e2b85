"""Data piece: synthetic tokens until real data modules arrive (the SFT / pretraining data
modules come in a later issue). MockDataModule needs no files or network."""

from typing import Any

import nemo_run as run

from nemo_lite import llm


def mock_data(seq_length: int = 2048, global_batch_size: int = 512, micro_batch_size: int = 1,
              **kwargs: Any) -> run.Config:
    """Learnable synthetic sequences with Megatron's batch sampler (micro / global batch)."""
    return run.Config(llm.MockDataModule, seq_length=seq_length,
                      global_batch_size=global_batch_size, micro_batch_size=micro_batch_size,
                      **kwargs)
