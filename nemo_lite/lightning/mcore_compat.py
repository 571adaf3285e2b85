"""What differs between the megatron-core releases nemo_lite runs on, in one place.

Supported: 0.16.x (Python 3.11, CI's main stack) and 0.19.x (Python 3.12). Each function below
hides one API difference, names the upstream code it targets and what changed; callers use it
instead of the megatron function. CPU redirections that depend on the release are keyed by
`at_least(...)` in `_cpu.py` / `_cpu_moe.py`.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def mcore_version() -> tuple[int, int, int]:
    from importlib.metadata import version

    parts = (version("megatron-core").split("+")[0].split(".") + ["0", "0"])[:3]
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts)  # type: ignore[return-value]


def at_least(release: str) -> bool:
    """Whether the installed megatron-core is `release` (e.g. "0.19") or newer."""
    wanted = tuple(int(p) for p in (release.split(".") + ["0", "0"])[:3])
    return mcore_version() >= wanted


def batch_on_this_cp_rank(batch: dict[str, Any]) -> dict[str, Any]:
    """`megatron.core.utils.get_batch_on_this_cp_rank`: this CP rank's slice of a batch.

    0.16: `(batch)`, reading the CP group from parallel_state. 0.19: `(batch, is_hybrid_cp,
    cp_group=None, ...)`: `is_hybrid_cp` (required) selects a hybrid-CP partitioning nemo_lite
    does not use, and a None `cp_group` means the *world* group (every rank would cut the
    sequence as if all ranks were CP ranks), so the CP group is passed.
    """
    from megatron.core.utils import get_batch_on_this_cp_rank

    if at_least("0.19"):
        from megatron.core import parallel_state

        return get_batch_on_this_cp_rank(
            batch, is_hybrid_cp=False, cp_group=parallel_state.get_context_parallel_group())
    return get_batch_on_this_cp_rank(batch)


def async_save_kwargs() -> dict[str, Any]:
    """Extra arguments of `dist_checkpointing.save(..., async_sharded_save=True)`.

    0.19 adds `async_strategy`, defaulting to "nvrx" (nvidia-resiliency-ext, not a megatron
    dependency: ModuleNotFoundError without it); "mcore" is 0.16's built-in async writer.
    """
    return {"async_strategy": "mcore"} if at_least("0.19") else {}


def static_inference_engine(chunk: Any, controller: Any, *, padded_vocab_size: int,
                            max_batch_size: int, max_sequence_length: int) -> Any:
    """megatron's static-batch inference engine over `chunk` (`GPTInferenceWrapper` ->
    `TextGenerationController` -> `StaticInferenceEngine(legacy=True)`), with a KV cache for
    `max_batch_size` rows of `max_sequence_length` tokens. `controller(wrapped_model)` makes
    the `TextGenerationController` (or a subclass).

    0.16: `InferenceWrapperConfig` carries the sizes (`inference_batch_times_seqlen_threshold=-1`
    keeps pipeline micro-batching off; `padded_vocab_size`: the output layer's rows, all TP ranks
    together) and the
    context comes from `StaticInferenceContext.from_config`. 0.19: no wrapper config;
    `StaticInferenceContext(max_batch_size, max_sequence_length)`, `GPTInferenceWrapper(model,
    context)`, the vocabulary from the model. Both: `legacy=True` (the default path builds a
    `DynamicInferenceContext`, CUDA only, and falls back with a warning).
    """
    import warnings

    from megatron.core.inference.contexts import StaticInferenceContext
    from megatron.core.inference.engines import StaticInferenceEngine
    from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
        GPTInferenceWrapper,
    )
    if at_least("0.19"):
        context = StaticInferenceContext(max_batch_size=max_batch_size,
                                         max_sequence_length=max_sequence_length)
        wrapped = GPTInferenceWrapper(chunk, context)
    else:
        from megatron.core.inference.model_inference_wrappers.inference_wrapper_config import (
            InferenceWrapperConfig,
        )

        config = chunk.config
        wrapper_config = InferenceWrapperConfig(
            hidden_size=config.hidden_size, params_dtype=config.params_dtype,
            inference_batch_times_seqlen_threshold=-1,
            padded_vocab_size=padded_vocab_size, inference_max_requests=max_batch_size,
            inference_max_seq_length=max_sequence_length)
        context = StaticInferenceContext.from_config(wrapper_config)
        wrapped = GPTInferenceWrapper(chunk, wrapper_config, context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will be deprecated": the static path is what runs
        return StaticInferenceEngine(controller(wrapped), max_batch_size=max_batch_size,
                                     legacy=True)


def end_inference_mode() -> None:
    """0.19's `StaticInferenceEngine` sets a process-wide `InferenceMode` flag (read by attention
    and the transformer layers) and never unsets it; unset it so training can follow in the same
    process. 0.16 has no such flag."""
    if at_least("0.19"):
        from megatron.core.inference.utils import InferenceMode

        InferenceMode.unset_active()
