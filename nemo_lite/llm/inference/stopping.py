"""User stop strings (`SamplingParams.stop_words`), which megatron's static engine does not read.

Each row ends at the first token after which its text holds a stop string: the tokens up to and
with that one are kept, the text is cut before the stop string (megatron's
`detokenize_stop_sequence=True`, 0.19, keeps it). The engine itself runs each batch to its
end-of-document ids or `num_tokens_to_generate`; rows are independent (a row's tokens never
depend on another row's, and sampling draws for every row at every step), so cutting afterwards
gives exactly the rows an early stop would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any


def first_stop(tokens: Sequence[int], stop_words: Sequence[str],
               detokenize: Callable[[list[int]], str]) -> tuple[int, str] | None:
    """(tokens to keep, the text up to the stop string) at the first stop, or None."""
    for kept in range(1, len(tokens) + 1):
        text = detokenize(list(tokens[:kept]))
        hits = [text.find(word) for word in stop_words if word in text]
        if hits:
            return kept, text[:min(hits)]
    return None


def apply_stop_words(request: Any, stop_words: Sequence[str], detokenize: Callable,
                     keep_stop_word: bool = False) -> Any:
    """`request` (megatron's InferenceRequest) ended at its first stop string; a new request."""
    tokens = request.generated_tokens.tolist()
    stop = first_stop(tokens, stop_words, detokenize)
    if stop is None:
        return request
    kept, text = stop
    changes: dict[str, Any] = {
        "generated_tokens": request.generated_tokens[:kept],
        "generated_text": detokenize(tokens[:kept]) if keep_stop_word else text,
        "generated_length": kept,
    }
    if request.generated_log_probs is not None:
        changes["generated_log_probs"] = request.generated_log_probs[:kept]
    return dataclasses.replace(request, **changes)


def visible_text(text: str, stop_words: Sequence[str]) -> str:
    """What of a growing `text` the final text surely holds: the text before its first stop
    string, or, with none yet, the text less a tail that may still become one."""
    hits = [text.find(word) for word in stop_words if word in text]
    if hits:
        return text[:min(hits)]
    for start in range(max(0, len(text) - max(map(len, stop_words), default=0) + 1), len(text)):
        if any(word.startswith(text[start:]) for word in stop_words):
            return text[:start]
    return text


class ShownText:
    """A growing text written to a terminal piece by piece (`update`, with the texts of
    `Generator.generate`'s `on_text`), then completed with the final text (`finish`). A
    character whose bytes are still arriving (U+FFFD at the end) waits for the next update."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write, self.shown = write, ""

    def update(self, text: str) -> None:
        self._show(text.rstrip("\ufffd"))

    def finish(self, text: str) -> None:
        self._show(text)

    def _show(self, text: str) -> None:
        if text.startswith(self.shown) and len(text) > len(self.shown):
            self.write(text[len(self.shown):])
            self.shown = text
