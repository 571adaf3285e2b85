"""Tokenizers that need nothing from the network.

`ByteTokenizer` maps UTF-8 bytes to ids 0-255 plus end-of-document and padding ids: it is
what mock data and quick runs use, and the fallback when no trained tokenizer is given.
"""

from nemo_lite.io.capture import IOMixin


class ByteTokenizer(IOMixin):
    """UTF-8 bytes as token ids; `eos_id` ends a document, `pad_id` fills packed rows."""

    def __init__(self) -> None:
        self.eos_id = 256
        self.pad_id = 257
        self.vocab_size = 258

    @property
    def eos(self) -> int:
        return self.eos_id

    def text_to_ids(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def ids_to_text(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"
