"""A checkpoint's model loaded on this process's rank, ready for many generations.

`load_generator(path, trainer)` launches the trainer's ranks the way `trainer.fit` does (one
process, or Lightning re-running the script for the others), sets up its strategy (process group,
megatron's parallel state, the layout written into the model config), builds the model with its
fine-tuning transform, loads the weights saved from any layout, and wraps the chunk in megatron's
static inference engine with a KV cache of `max_batch_size` rows x `max_sequence_length` tokens.
`Generator.generate` then runs batches of prompts; every rank calls it with the same arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

from nemo_lite.llm.inference.checks import (
    GenerateError,
    check_layout,
    default_trainer,
    sampling_params,
    saved_tokenizer,
)
from nemo_lite.llm.inference.prompts import (
    Prompt,
    chat_format,
    check_fits,
    checked_prompts,
    tokenized_prompts,
)


class Generator:
    """megatron's engine over this rank's model; `close()` (or `with`) releases the rank."""

    def __init__(self, engine: Any, tokenizer: Any, *, model: Any, ckpt: Any, max_batch_size: int,
                 max_sequence_length: int, default_seed: int, world: contextlib.ExitStack):
        self.engine, self.tokenizer, self.model, self.ckpt = engine, tokenizer, model, ckpt
        self._chat: Any = None  # the checkpoint's ChatFormat, read at the first chat prompt
        self.max_batch_size, self.max_sequence_length = max_batch_size, max_sequence_length
        self.default_seed, self.world = default_seed, world

    def generate(self, prompts: Sequence[Any], inference_params: Any = None,
                 random_seed: Optional[int] = None, add_BOS: bool = False, chat: bool = False,
                 on_text: Optional[Callable[[int, str], None]] = None) -> list[Any]:
        """megatron's `InferenceRequest` per prompt, in prompt order, on every rank.

        `prompts`: strings; with `chat`, conversations too (`prompts.py`). `on_text(index,
        text)` streams: at each new token, on the replica that runs prompt `index`, with the
        part of its text so far that the final text holds (cut at a stop string, less a tail
        that may still become one; the returned text is the final word). Data-parallel replicas share the batches
        of `max_batch_size` prompts (with expert parallelism each replica runs them all: every
        EP rank takes part in every step). Batch b samples with seed `random_seed` + b
        whichever replica runs it, so a seed gives the same text on any layout."""
        import torch
        from megatron.core import parallel_state

        from nemo_lite.llm.inference.stopping import apply_stop_words

        params = sampling_params(inference_params)
        prompts = self.prompts(prompts, add_BOS=add_BOS, chat=chat)
        check_fits(prompts, params.num_tokens_to_generate, self.max_sequence_length,
                   "this generator's KV cache (load_generator's max_sequence_length, default "
                   "the model's config.seq_length)")
        split = parallel_state.get_expert_model_parallel_world_size() == 1
        dp_rank = parallel_state.get_data_parallel_rank() if split else 0
        dp_size = parallel_state.get_data_parallel_world_size() if split else 1
        seed = self.default_seed if random_seed is None else random_seed
        mine = []  # (prompt index, request) of the batches this replica runs
        for batch in range(dp_rank, -(-len(prompts) // self.max_batch_size), dp_size):
            indices = range(batch * self.max_batch_size,
                            min((batch + 1) * self.max_batch_size, len(prompts)))
            self.engine.controller.sampling_rng.manual_seed(seed + batch)
            shown = None if on_text is None else _cut_at_stops(
                lambda row, text, base=indices[0]: on_text(base + row, text), params.stop_words)
            done = self._run([prompts[i] for i in indices], params, shown)
            if params.stop_words:
                done = [apply_stop_words(r, params.stop_words, self.tokenizer.detokenize,
                                         getattr(params, "detokenize_stop_sequence", False))
                        for r in done]
            mine += zip(indices, done, strict=True)
        shares: list[Any] = [mine]
        if dp_size > 1:
            shares = [None] * dp_size
            torch.distributed.all_gather_object(
                shares, mine, group=parallel_state.get_data_parallel_group())
        return [request for _, request in sorted(
            (pair for share in shares for pair in share), key=lambda pair: pair[0])]

    def prompts(self, prompts: Sequence[Any], add_BOS: bool = False,
                chat: bool = False) -> list[Prompt]:
        """`prompts` as the model reads them (Prompts pass through as they are)."""
        if prompts and all(isinstance(p, Prompt) for p in prompts):
            return list(prompts)
        if chat and self._chat is None:
            self._chat = chat_format(self.ckpt, self.tokenizer.tokenizer)
        return tokenized_prompts(checked_prompts(prompts, chat), self.tokenizer.tokenizer,
                                 add_BOS=add_BOS, chat=self._chat if chat else None)

    def _run(self, prompts: list[Prompt], params: Any,
             on_text: Optional[Callable[[int, str], None]]) -> list[Any]:
        """One batch through the engine, as its own `generate` runs it, with our token ids
        (and megatron's token streams when `on_text` is given)."""
        from megatron.core.inference.inference_request import InferenceRequest

        engine = self.engine

        def add(prompt: Prompt, streaming: bool) -> Any:
            request = InferenceRequest(request_id=engine.get_new_request_id(), prompt=prompt.text,
                                       prompt_tokens=list(prompt.ids), sampling_params=params)
            return engine.add_request(prompt=prompt.text, sampling_params=params,
                                      streaming=streaming, inference_request=request)

        if on_text is None:
            ids = [add(prompt, False) for prompt in prompts]
            self._run_engine()
        else:
            ids = asyncio.run(self._streamed(prompts, add, on_text))
        # megatron's text is detokenize(prompt + generated)[len(prompt text):], which cuts
        # wrongly when the prompt's ids do not print as its text (a chat template's special
        # tokens); the text of the generated ids is what streaming and stop strings see
        return [dataclasses.replace(request, generated_text=self.tokenizer.detokenize(
                    request.generated_tokens.tolist()))
                for request in (engine.scheduler.completed_request_pool[i] for i in ids)]

    async def _streamed(self, prompts: list[Prompt], add: Callable,
                        on_text: Callable[[int, str], None]) -> list[Any]:
        """megatron's streaming: the engine runs in a worker thread (as `run_engine_async`
        does) while this loop hands each request's partial text to `on_text`."""
        ids = [add(prompt, True) for prompt in prompts]  # streams bound to this running loop

        async def follow(row: int, request_id: Any) -> None:
            async for partial in self.engine.get_stream_generator(request_id):
                on_text(row, partial.generated_text or "")

        work = asyncio.get_running_loop().run_in_executor(None, self._run_engine)
        await asyncio.gather(work, *(follow(row, i) for row, i in enumerate(ids)))
        return ids

    def _run_engine(self) -> None:
        import torch

        from nemo_lite.lightning.device import is_cuda

        device = next(self.model.parameters()).device
        if is_cuda(device):  # a worker thread starts on device 0
            torch.cuda.set_device(device)
        with torch.no_grad():  # grad mode is per thread
            self.engine.run_engine()

    def logits(self, tokens: Any) -> Any:
        """fp32 logits [rows, length, vocabulary] of one full forward (no KV cache) over
        `tokens` [rows, length] (the scoring of `llm.evaluate`): every rank calls it with the
        same tokens; tensor parallel ranks gather the whole vocabulary (pipeline parallel 1)."""
        import torch

        device = next(self.model.parameters()).device
        tokens = tokens.to(device)
        positions = torch.arange(tokens.shape[1], device=device).expand_as(tokens)
        with torch.no_grad():
            logits = self.model(input_ids=tokens, position_ids=positions, attention_mask=None,
                                runtime_gather_output=True)  # whole vocabulary rows
        return logits.float().cpu()

    def close(self) -> None:
        self.world.close()

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load_generator(path: str, trainer: Any = None, max_batch_size: int = 8,
                   max_sequence_length: Optional[int] = None) -> Generator:
    """Load checkpoint `path` for generation on `trainer`'s ranks (default: one rank, the GPU
    when there is one); `max_sequence_length` (default: the model's `seq_length`) sizes the
    KV cache."""
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_dir import resolve_checkpoint_path

    trainer = trainer if trainer is not None else default_trainer()
    check_layout(trainer)
    if max_batch_size < 1:
        raise GenerateError(f"max_batch_size={max_batch_size}: it must be at least 1.")
    ckpt = resolve_checkpoint_path(path)
    saved_tokenizer(ckpt)  # a clear error before any rank starts
    context = load_context(ckpt, subpath="model.config").seq_length
    length = max_sequence_length or context
    if length > context:
        raise GenerateError(f"max_sequence_length={length} is more than the model's context of "
                            f"{context} (config.seq_length).")
    world = contextlib.ExitStack()
    launcher = trainer.strategy.launcher
    load = functools.partial(_load_on_rank, trainer, ckpt, world, max_batch_size=max_batch_size,
                             max_sequence_length=length)
    if launcher is not None:
        return launcher.launch(load, trainer=trainer)
    world.enter_context(_one_process_world())
    try:
        return load()
    except BaseException:
        world.close()
        raise


def _load_on_rank(trainer: Any, ckpt: Any, world: contextlib.ExitStack, *,
                  max_batch_size: int, max_sequence_length: int) -> Generator:
    from megatron.core import parallel_state

    from nemo_lite.io import load_context
    from nemo_lite.lightning.mcore_compat import end_inference_mode, static_inference_engine
    from nemo_lite.lightning.saved_model import load_saved_model
    from nemo_lite.llm.inference.controller import RealVocabController
    from nemo_lite.llm.inference.tokenizer import MegatronTokenizer

    model = load_context(ckpt, subpath="model")  # config, tokenizer, model transform (LoRA)
    model.config.perform_initialization = False  # every weight comes from the checkpoint
    strategy = trainer.strategy
    strategy.connect(model)
    strategy.setup_environment()  # process group, megatron's parallel state, config layout
    world.callback(parallel_state.destroy_model_parallel)
    world.callback(end_inference_mode)
    if not strategy.uses_cuda:
        from nemo_lite.lightning import _cpu_inference

        _cpu_inference.apply()
    model.configure_model()
    chunks = [chunk.to(strategy.root_device) for chunk in model.module]
    load_saved_model(chunks, ckpt)
    padded_vocab_size = chunks[0].vocab_size  # megatron's GPTModel: the padded vocabulary
    if strategy.precision_plugin.is_half:  # bf16 / fp16 compute, as the strategy trains
        from megatron.core.transformer.module import Float16Module

        chunks = [Float16Module(model.config, chunk) for chunk in chunks]
    tokenizer = MegatronTokenizer(model.tokenizer)
    controller = functools.partial(RealVocabController, tokenizer=tokenizer,
                                   real_vocab_size=model.config.vocab_size)
    engine = static_inference_engine(chunks[0].eval(), controller,
                                     padded_vocab_size=padded_vocab_size,
                                     max_batch_size=max_batch_size,
                                     max_sequence_length=max_sequence_length)
    return Generator(engine, tokenizer, model=chunks[0], ckpt=ckpt, max_batch_size=max_batch_size,
                     max_sequence_length=max_sequence_length,
                     default_seed=model.config.inference_sampling_seed, world=world)


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




def _cut_at_stops(on_text: Callable[[int, str], None],
                  stop_words: Optional[Sequence[str]]) -> Callable[[int, str], None]:
    """`on_text` seeing of each row's text what its final text surely holds
    (`stopping.visible_text`)."""
    if not stop_words:
        return on_text

    from nemo_lite.llm.inference.stopping import visible_text

    return lambda row, text: on_text(row, visible_text(text, stop_words))
