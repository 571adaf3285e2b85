"""Data pieces: synthetic tokens (MockDataModule: no files, no network) and Megatron indexed
datasets (PreTrainingDataModule: .bin/.idx files written by the preprocessor)."""

from typing import Any, Union

import nemo_run as run

from nemo_lite import llm


def mock_data(seq_length: int = 2048, global_batch_size: int = 512, micro_batch_size: int = 1,
              **kwargs: Any) -> run.Config:
    """Learnable synthetic sequences with Megatron's batch sampler (micro / global batch)."""
    return run.Config(llm.MockDataModule, seq_length=seq_length,
                      global_batch_size=global_batch_size, micro_batch_size=micro_batch_size,
                      **kwargs)


def pretraining_data(paths: Union[str, list[Any], dict[str, Any], None] = None,
                     seq_length: int = 2048, global_batch_size: int = 512,
                     micro_batch_size: int = 1, tokenizer: Any = None,
                     **kwargs: Any) -> run.Config:
    """Megatron indexed datasets (.bin/.idx prefixes, weighted blends, train/validation/test
    split) with Megatron's batch sampler; `kwargs` go to PreTrainingDataModule (split,
    index_mapping_dir, seed, num_workers, ...). The tokenizer defaults to bytes."""
    from nemo_lite.llm.data.pretraining import PreTrainingDataModule

    return run.Config(PreTrainingDataModule, paths=paths, seq_length=seq_length,
                      global_batch_size=global_batch_size, micro_batch_size=micro_batch_size,
                      tokenizer=tokenizer, **kwargs)
