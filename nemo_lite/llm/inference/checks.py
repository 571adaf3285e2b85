"""What `llm.generate` checks before anything is loaded: prompts, sampling parameters, the
trainer's layout, the checkpoint's tokenizer. Each problem is one `GenerateError` line."""

from __future__ import annotations

from typing import Any

DEFAULT_NEW_TOKENS = 32


class GenerateError(ValueError):
    """Bad input to `llm.generate`: one line saying what is wrong and how to fix it."""


def default_trainer() -> Any:
    """One rank: the GPU when there is one, else the CPU."""
    from nemo_lite import lightning as nl

    return nl.Trainer(devices=1, accelerator="auto", strategy=nl.MegatronStrategy(),
                      logger=False, enable_checkpointing=False)


def check_layout(trainer: Any) -> None:
    strategy = trainer.strategy
    layout = getattr(strategy, "layout", None)
    if layout is None:
        raise GenerateError(f"trainer.strategy is a {type(strategy).__name__}: llm.generate "
                            "needs nl.MegatronStrategy.")
    if layout.virtual_pipeline_model_parallel_size or layout.context_parallel_size > 1:
        raise GenerateError(
            "virtual_pipeline_model_parallel_size / context_parallel_size > 1: megatron's "
            "static inference engine runs one model chunk per rank without context "
            "parallelism; generate with tensor / pipeline / expert / data parallelism.")


def saved_tokenizer(ckpt: Any) -> Any:
    from nemo_lite.io import load_context
    from nemo_lite.io.errors import ContextError

    try:
        tokenizer = load_context(ckpt, subpath="model.tokenizer")
    except ContextError:
        tokenizer = None
    if tokenizer is None:
        raise GenerateError(
            f"checkpoint {ckpt} saved no tokenizer (its model had tokenizer=None): generation "
            "needs one to read prompts and write text; train with llm.GPTModel(config, "
            "tokenizer=...) or import a Hugging Face model (its tokenizer comes along).")
    return tokenizer


def sampling_params(given: Any) -> Any:
    from megatron.core.inference.sampling_params import SamplingParams

    if given is None:
        return SamplingParams(top_k=1, num_tokens_to_generate=DEFAULT_NEW_TOKENS)
    if not isinstance(given, SamplingParams):
        raise GenerateError(
            f"inference_params is a {type(given).__name__}: pass megatron's SamplingParams "
            "(or CommonInferenceParams), e.g. SamplingParams(top_k=1, "
            "num_tokens_to_generate=32).")
    if not given.num_tokens_to_generate or given.num_tokens_to_generate < 1:
        raise GenerateError(
            f"inference_params.num_tokens_to_generate={given.num_tokens_to_generate}: set how "
            "many tokens to generate (at least 1).")
    words = given.stop_words
    if words is not None and (isinstance(words, str) or not all(
            isinstance(w, str) and w for w in words)):
        raise GenerateError(f"inference_params.stop_words={words!r}: give a list of non-empty "
                            "strings, e.g. stop_words=['\\n\\n'].")
    if given.top_k < 0 or not 0.0 <= given.top_p <= 1.0 or (given.top_k > 0 and given.top_p > 0):
        raise GenerateError(
            f"inference_params top_k={given.top_k}, top_p={given.top_p}: use top_k >= 0 and "
            "0 <= top_p <= 1, not both (megatron samples with one of them).")
    return given


def saved_checkpoint(path: Any, command: str, error: type = GenerateError) -> tuple[Any, Any]:
    """(checkpoint directory, its saved tokenizer) for the CLI's checks before launch: a
    missing path, an incomplete or corrupt checkpoint or a missing tokenizer is one `error`."""
    from nemo_lite.lightning.checkpoint_dir import resolve_checkpoint_path
    from nemo_lite.lightning.checkpoint_io import checkpoint_problem

    if not path:
        raise error(f"{command} needs path=CHECKPOINT.")
    ckpt = resolve_checkpoint_path(path)
    problem, _ = checkpoint_problem(ckpt)
    if problem:
        raise error(problem)
    return ckpt, saved_tokenizer(ckpt)
