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
run whole batches, so the same seed gives the same text on any layout. Without `inference_params`, generation is greedy for 32 tokens. Padded vocabulary
rows are masked to -inf by the model and cut off before sampling, so they are never chosen and
a seed means the same tokens at any TP size (`controller.py`). `stop_words` end each row at its
first stop string (`stopping.py`).

Ranks: `trainer` (default: one rank, the GPU when there is one) is launched the way `trainer.fit`
launches it, and its strategy's layout applies: tensor, pipeline and expert parallel ranks share
the model (megatron's engine passes activations between pipeline stages), data-parallel
replicas share the batches of prompts (with expert parallelism each replica runs them all: every
EP rank takes part in every step); every rank returns all results, in prompt order.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, Optional

DEFAULT_NEW_TOKENS = 32


class GenerateError(ValueError):
    """Bad input to `llm.generate`: one line saying what is wrong and how to fix it."""


def generate(path: str, prompts: Sequence[str], trainer: Any = None,
             inference_params: Any = None, max_batch_size: int = 8,
             random_seed: Optional[int] = None, add_BOS: bool = False,
             text_only: bool = False) -> list[Any]:
    """Generate a continuation of each prompt with the model of checkpoint `path`.

    Returns megatron's `InferenceRequest`s in prompt order (`.generated_text`,
    `.generated_tokens`, `.prompt_tokens`), or only the texts with `text_only=True`.
    """
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_dir import resolve_checkpoint_path

    prompts = _checked_prompts(prompts)
    trainer = trainer if trainer is not None else _default_trainer()
    _check_layout(trainer)
    if max_batch_size < 1:
        raise GenerateError(f"max_batch_size={max_batch_size}: it must be at least 1.")
    ckpt = resolve_checkpoint_path(path)
    config = load_context(ckpt, subpath="model.config")
    tokenizer = _tokenizer(ckpt)
    params = _sampling_params(inference_params)
    encoded = [tokenizer.text_to_ids(p) for p in prompts]
    longest = max(len(ids) for ids in encoded) + int(add_BOS)
    total = longest + params.num_tokens_to_generate
    if total > config.seq_length:
        raise GenerateError(
            f"the longest prompt ({longest} tokens) plus num_tokens_to_generate "
            f"({params.num_tokens_to_generate}) is {total} tokens, more than the model's context "
            f"of {config.seq_length} (config.seq_length): shorten the prompt or generate fewer "
            "tokens.")
    return _run(ckpt, prompts, params, trainer=trainer, max_batch_size=max_batch_size,
                max_sequence_length=total, random_seed=random_seed, add_BOS=add_BOS,
                text_only=text_only)


def _run(ckpt: Any, prompts: list[str], params: Any, *,
         trainer: Any, max_batch_size: int, max_sequence_length: int,
         random_seed: Optional[int], add_BOS: bool, text_only: bool) -> list[Any]:
    """Each rank of `trainer` (launched by its strategy, as `trainer.fit` would) builds its
    part of the model, loads it, and runs the engine on its data-parallel share of prompts."""
    import functools

    rank_fn = functools.partial(
        _generate_on_rank, trainer, ckpt, prompts, params, max_batch_size=max_batch_size,
        max_sequence_length=max_sequence_length, random_seed=random_seed, add_BOS=add_BOS)
    launcher = trainer.strategy.launcher
    if launcher is not None:
        results = launcher.launch(rank_fn, trainer=trainer)
    else:
        with _one_process_world():
            results = rank_fn()
    return [r.generated_text for r in results] if text_only else results


@contextlib.contextmanager
def _one_process_world() -> Iterator[None]:
    """A one-process generation leaves the process as it found it: the process group
    Lightning opens for it is closed, and the MASTER_ADDR / MASTER_PORT it sets are unset
    (a job launched from this process later would otherwise inherit a port in use)."""
    import torch.distributed as dist

    if dist.is_initialized():  # the caller's world: theirs to keep
        yield
        return
    saved = {name: os.environ.get(name) for name in ("MASTER_ADDR", "MASTER_PORT")}
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _generate_on_rank(trainer: Any, ckpt: Any, prompts: list[str], params: Any, *,
                      max_batch_size: int, max_sequence_length: int,
                      random_seed: Optional[int], add_BOS: bool) -> list[Any]:
    import functools

    import torch
    from megatron.core import parallel_state

    from nemo_lite.io import load_context
    from nemo_lite.lightning.mcore_compat import end_inference_mode, static_inference_engine
    from nemo_lite.lightning.model_state import load_saved_model
    from nemo_lite.llm.inference.controller import RealVocabController
    from nemo_lite.llm.inference.stopping import apply_stop_words
    from nemo_lite.llm.inference.tokenizer import MegatronTokenizer

    model = load_context(ckpt, subpath="model")  # config, tokenizer, model transform (LoRA)
    model.config.perform_initialization = False  # every weight comes from the checkpoint
    if random_seed is not None:
        model.config.inference_sampling_seed = random_seed
    strategy = trainer.strategy
    strategy.connect(model)
    strategy.setup_environment()  # process group, megatron's parallel state, config layout
    if not strategy.uses_cuda:
        from nemo_lite.lightning import _cpu_inference

        _cpu_inference.apply()
    try:
        model.configure_model()
        chunks = [chunk.to(strategy.root_device) for chunk in model.module]
        load_saved_model(chunks, ckpt)
        chunk = chunks[0].eval()
        tokenizer = MegatronTokenizer(model.tokenizer)
        controller = functools.partial(RealVocabController, tokenizer=tokenizer,
                                       real_vocab_size=model.config.vocab_size)
        engine = static_inference_engine(chunk, controller, max_batch_size=max_batch_size,
                                         max_sequence_length=max_sequence_length)
        # data-parallel replicas share the batches; with expert parallelism every replica runs
        # every batch (each EP rank must take part in every step's all-to-all)
        split = parallel_state.get_expert_model_parallel_world_size() == 1
        dp_rank = parallel_state.get_data_parallel_rank() if split else 0
        dp_size = parallel_state.get_data_parallel_world_size() if split else 1
        seed = model.config.inference_sampling_seed
        mine = []  # (prompt index, request) of the batches this data-parallel replica runs
        for batch in range(dp_rank, -(-len(prompts) // max_batch_size), dp_size):
            indices = range(batch * max_batch_size,
                            min((batch + 1) * max_batch_size, len(prompts)))
            # one seed per batch of prompts, whichever replica runs it: the same seed gives
            # the same text on any layout
            engine.controller.sampling_rng.manual_seed(seed + batch)
            with torch.no_grad():
                done = engine.generate(prompts=[prompts[i] for i in indices], add_BOS=add_BOS,
                                       sampling_params=params)
            if params.stop_words:
                done = [apply_stop_words(r, params.stop_words, tokenizer.detokenize, getattr(
                    params, "detokenize_stop_sequence", False)) for r in done]
            mine += zip(indices, done, strict=True)  # megatron keeps the prompt order
        shares: list[Any] = [mine]
        if dp_size > 1:
            shares = [None] * dp_size
            torch.distributed.all_gather_object(
                shares, mine, group=parallel_state.get_data_parallel_group())
        return [request for _, request in sorted(
            (pair for share in shares for pair in share), key=lambda pair: pair[0])]
    finally:
        end_inference_mode()
        parallel_state.destroy_model_parallel()


def _checked_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts or [])
    if not prompts:
        raise GenerateError("no prompts: pass prompts=['...'] (a list of strings).")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt:
            raise GenerateError(f"prompts[{index}] is {prompt!r}: every prompt must be a "
                                "non-empty string.")
    return prompts


def _default_trainer() -> Any:
    """One rank: the GPU when there is one, else the CPU."""
    from nemo_lite import lightning as nl

    return nl.Trainer(devices=1, accelerator="auto", strategy=nl.MegatronStrategy(),
                      logger=False, enable_checkpointing=False)


def _check_layout(trainer: Any) -> None:
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


def _tokenizer(ckpt: Any) -> Any:
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


def _sampling_params(given: Any) -> Any:
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
