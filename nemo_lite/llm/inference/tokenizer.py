"""The tokenizer interface megatron-core's text generation controller calls, over nemo_lite's
tokenizers (`HFTokenizer`, `SentencePieceTokenizer`, `ByteTokenizer`).

megatron calls `tokenize(text) -> ids`, `detokenize(ids[, skip_special_tokens])`, `.eod` (the
padding id of a batch and the id that ends a row), `.bos` (with `add_BOS`), `.vocab_size` and
`offsets(ids, text)` (only for `return_segments`). nemo_lite's tokenizers name these
`text_to_ids`, `ids_to_text`, `eos_id`, `bos_id`.
"""

from __future__ import annotations

from typing import Any, Optional


class MegatronTokenizer:
    """A nemo_lite tokenizer seen through megatron's tokenizer interface."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.text_to_ids(text))

    def detokenize(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.ids_to_text([int(i) for i in ids])

    @property
    def eod(self) -> int:
        return int(self.tokenizer.eos_id)

    @property
    def bos(self) -> Optional[int]:
        return getattr(self.tokenizer, "bos_id", None)

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    def offsets(self, ids: list[int], text: str) -> list[int]:
        """Where each token's text starts in `text` (megatron's `return_segments`)."""
        starts, position = [], 0
        for token in ids:
            starts.append(position)
            position += len(self.tokenizer.ids_to_text([int(token)]))
        return starts
