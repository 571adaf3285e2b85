"""megatron's text generation controller, sampling from the real vocabulary only.

megatron pads the vocabulary to a multiple of 128 x TP, so the logits a step samples from have
384 columns at TP1 and 512 at TP2 for a 300-token vocabulary. The padded columns are -inf (the
model masks them) and are never chosen, but `torch.multinomial` draws differently over more
columns, so the same seed would give different text at different TP sizes. Cutting the logits to
the real vocabulary before megatron samples makes a seed mean the same tokens on any layout.
"""

from __future__ import annotations

from typing import Any

from megatron.core.inference.text_generation_controllers.text_generation_controller import (
    TextGenerationController,
)


class RealVocabController(TextGenerationController):
    """`TextGenerationController` whose sampling sees the first `real_vocab_size` logits."""

    def __init__(self, inference_wrapped_model: Any, tokenizer: Any, *,
                 real_vocab_size: int) -> None:
        super().__init__(inference_wrapped_model, tokenizer)
        self.real_vocab_size = real_vocab_size

    def sample_from_logits(self, last_token_logits: Any, sampling_params: Any = None,
                           vocab_size: Any = None, **kwargs: Any) -> Any:
        return super().sample_from_logits(last_token_logits[..., :self.real_vocab_size],
                                          sampling_params, self.real_vocab_size, **kwargs)
