"""`llm.generate(path, prompts, ...)`: text from a checkpoint, on megatron-core's inference engine.

The checkpoint's saved context gives the model config and tokenizer; its weights load from
whatever layout saved them. megatron's static-batch engine runs the prompts in batches of
`max_batch_size` rows with its KV cache (`StaticInferenceContext`): the prompt is read once, then
each new token costs one token of forward work per row. Rows of different lengths share a batch
(megatron pads them and starts generating at the shortest prompt's end); a row ends at the
tokenizer's end-of-document id (left out of the text) or after `num_tokens_to_generate`.

Sampling follows megatron's `SamplingParams` (NeMo's `CommonInferenceParams` is the same class):
`top_k=1` is greedy; `temperature`, `top_k`, `top_p` sample with megatron's generator, seeded
with `random_seed` + the index of each batch of `max_batch_size` prompts: data-parallel replicas
run whole batches, so the same seed gives the same text on any layout. Without
`inference_params`, generation is greedy for 32 tokens. Padded vocabulary rows are masked to
-inf by the model and cut off before sampling, so they are never chosen and a seed means the same
tokens at any TP size (`controller.py`). `stop_words` end each row at its first stop string
(`stopping.py`).

Ranks: `trainer` (default: one rank, the GPU when there is one) is launched the way `trainer.fit`
launches it, and its strategy's layout applies: tensor, pipeline and expert parallel ranks share
the model (megatron's engine passes activations between pipeline stages), data-parallel
replicas share the batches of prompts (with expert parallelism each replica runs them all: every
EP rank takes part in every step); every rank returns all results, in prompt order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from nemo_lite.llm.inference.checks import GenerateError  # noqa: F401 - its error
from nemo_lite.llm.inference.generator import load_generator


def generate(path: str, prompts: Sequence[Any], trainer: Any = None,
             inference_params: Any = None, max_batch_size: int = 8,
             random_seed: Optional[int] = None, add_BOS: bool = False,
             text_only: bool = False, chat: bool = False,
             on_text: Optional[Callable[[int, str], None]] = None) -> list[Any]:
    """Generate a continuation of each prompt with the model of checkpoint `path`.

    Returns megatron's `InferenceRequest`s in prompt order (`.generated_text`,
    `.generated_tokens`, `.prompt_tokens`), or only the texts with `text_only=True`.
    `chat=True`: each prompt is a conversation (or a string: one user message) rendered in the
    checkpoint's chat format (`prompts.py`). `on_text(index, text_so_far)` streams each
    prompt's text as it grows. Loads the model for this call; `llm.load_generator` keeps it
    loaded for many calls.
    """
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_dir import resolve_checkpoint_path
    from nemo_lite.llm.inference.checks import sampling_params, saved_tokenizer
    from nemo_lite.llm.inference.prompts import (
        chat_format,
        check_fits,
        checked_prompts,
        tokenized_prompts,
    )

    params = sampling_params(inference_params)
    prompts = checked_prompts(prompts, chat)
    ckpt = resolve_checkpoint_path(path)
    tokenizer = saved_tokenizer(ckpt)
    tokenized = tokenized_prompts(prompts, tokenizer, add_BOS=add_BOS,
                                  chat=chat_format(ckpt, tokenizer) if chat else None)
    context = load_context(ckpt, subpath="model.config").seq_length
    check_fits(tokenized, params.num_tokens_to_generate, context,
               "the model's context (config.seq_length)")
    needed = max(len(p.ids) for p in tokenized) + params.num_tokens_to_generate
    with load_generator(ckpt, trainer, max_batch_size=max_batch_size,
                        max_sequence_length=needed) as generator:  # a KV cache just this long
        results = generator.generate(tokenized, params, random_seed=random_seed,
                                     on_text=on_text)
    return [r.generated_text for r in results] if text_only else results
