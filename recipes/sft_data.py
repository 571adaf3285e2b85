"""Data piece for fine-tuning: jsonl prompt/answer or chat examples with answer-only loss.

`finetuning_data(dataset_root="/data/squad")` reads training.jsonl / validation.jsonl there
(see nemo_lite/llm/data/finetuning.py for the line formats, the chat template and truncation).
With `packed_sequence=True` examples are packed into rows of `packed_sequence_size` tokens
(default: seq_length), one row per micro-batch: micro_batch_size is then 1 and
global_batch_size counts rows, as in NeMo.
"""

from typing import Any, Optional

import nemo_run as run


def finetuning_data(
    dataset_root: Optional[str] = None,
    seq_length: int = 2048,
    global_batch_size: int = 128,
    micro_batch_size: int = 1,
    packed_sequence: bool = False,
    packed_sequence_size: Optional[int] = None,
    train_path: Optional[str] = None,
    validation_path: Optional[str] = None,
    prompt_template: Optional[str] = None,
    tokenizer: Any = None,
    **kwargs: Any,
) -> run.Config:
    """A run.Config of FineTuningDataModule (tokenizer: a run.Config, or None for bytes)."""
    from nemo_lite.llm.data.finetuning import FineTuningDataModule

    return run.Config(
        FineTuningDataModule,
        dataset_root=dataset_root,
        seq_length=seq_length,
        global_batch_size=global_batch_size,
        micro_batch_size=micro_batch_size,
        packed_sequence=packed_sequence,
        packed_sequence_size=packed_sequence_size,
        train_path=train_path,
        validation_path=validation_path,
        prompt_template=prompt_template,
        tokenizer=tokenizer,
        **kwargs,
    )
