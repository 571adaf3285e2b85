"""The megatron GPTModel that one rank builds per virtual-pipeline stage, knowing its true vocabulary.

Megatron builds the embedding and output layer at the padded vocabulary size; this subclass adds
what keeps the padding out of the model's function (see `vocab_padding`): zero padded rows,
-inf logits for padded ids, checkpoints holding the real rows only.
"""

from __future__ import annotations

import os
from typing import Any

from megatron.core.models.gpt import GPTModel as MCoreGPTModel

from nemo_lite.llm.gpt.vocab_padding import (
    MaskPaddedLogits,
    VocabRows,
    unpad_vocab_entries,
    zero_padded_rows,
)

# megatron's LanguageModule writes a model's attention backend into these process-wide variables
# (transformer-engine reads them) and asserts that every later model agrees. Their values when
# this module loads are the user's choice; later values are megatron's writes for earlier models.
NVTE_ATTENTION_VARIABLES = ("NVTE_FLASH_ATTN", "NVTE_FUSED_ATTN", "NVTE_UNFUSED_ATTN")
_USER_NVTE = {name: os.environ.get(name) for name in NVTE_ATTENTION_VARIABLES}


class GPTChunk(MCoreGPTModel):
    """megatron's GPTModel over `padded_vocab_size` rows of which the first `vocab_size` are real."""

    def __init__(self, config: Any, *, vocab_size: int, padded_vocab_size: int, **kwargs: Any):
        super().__init__(config, vocab_size=padded_vocab_size, **kwargs)
        self.true_vocab_size = vocab_size
        if self.pre_process:
            embedding = self.embedding.word_embeddings
            zero_padded_rows(embedding.weight, VocabRows(
                vocab_size, embedding.vocab_start_index, embedding.num_embeddings_per_partition))
        if self.post_process:
            layer = self.output_layer
            start = self._tp_rank() * layer.output_size_per_partition
            if layer.weight is not None:
                zero_padded_rows(layer.weight, VocabRows(
                    vocab_size, start, layer.output_size_per_partition))
            if padded_vocab_size > vocab_size:
                layer.register_forward_hook(
                    MaskPaddedLogits(vocab_size, padded_vocab_size, start))

    def _set_attention_backend(self) -> None:
        """megatron's check, against the user's NVTE_* variables rather than an earlier model's
        writes: models with different `attention_backend`s can be built one after another in
        a process (a test matrix, SDPA evaluation after training). A user's variable that
        contradicts the model's backend still fails megatron's assertion."""
        for name, value in _USER_NVTE.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        super()._set_attention_backend()

    def _tp_rank(self) -> int:
        import torch.distributed as dist

        group = getattr(self.output_layer, "tp_group", None)
        return dist.get_rank(group) if group is not None and dist.is_initialized() else 0

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: dict | None = None) -> dict[str, Any]:
        state = super().sharded_state_dict(prefix, sharded_offsets, metadata)
        return unpad_vocab_entries(state, prefix, self.true_vocab_size)
