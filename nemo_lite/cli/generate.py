"""`nemo llm generate path=CKPT prompts='["..."]' [prompts_file=F.jsonl] [output_path=OUT.jsonl]
[inference_params.temperature=0.7] [trainer.devices=2] [trainer.strategy.tensor_model_parallel_size=2] -y`.

The task's defaults (`generate_defaults`, NeMo-Run's default factory) give it a trainer of one
rank and greedy sampling for 32 tokens, so both take dotted overrides. Prompts come from the
command line or from a jsonl file (one `{"prompt": ...}` or `{"input": ...}` per line); the
texts are printed, or written as jsonl to `output_path` (a temporary name renamed at the end).
`check_generate` runs before anything loads: the checkpoint, its tokenizer, the prompts, the
sampling parameters and the output path, each problem one line and exit 2; `--dryrun` prints the
plan.
"""

import json
import sys
from pathlib import Path
from typing import Any, Optional

import nemo_run as run

PROMPT_KEYS = ("prompt", "input", "text")


# (no `from __future__ import annotations`: NeMo-Run's help reads these annotations as types)
def generate(path: str = "", prompts: Optional[list[str]] = None,
             prompts_file: Optional[str] = None, output_path: Optional[str] = None,
             trainer: Any = None, inference_params: Any = None, max_batch_size: int = 8,
             random_seed: Optional[int] = None, add_BOS: bool = False, chat: bool = False,
             stream: bool = True) -> None:
    """Generate from checkpoint `path`: print each prompt's text (one prompt: token by token
    unless stream=False), or write them as jsonl."""
    import torch.distributed as dist

    from nemo_lite import llm
    from nemo_lite.llm.inference.stopping import ShownText

    texts = read_prompts(prompts, prompts_file, chat)
    shown = None
    if stream and len(texts) == 1 and not output_path:
        shown = ShownText(_write)
        _write(f"--- prompt: {_label(texts[0])}\n")
    results = llm.generate(path=path, prompts=texts, trainer=trainer,
                           inference_params=inference_params, max_batch_size=max_batch_size,
                           random_seed=random_seed, add_BOS=add_BOS, chat=chat,
                           on_text=(lambda _, text: _rank_zero(shown.update, text))
                           if shown else None)
    if dist.is_initialized() and dist.get_rank() != 0:  # every rank has them; rank 0 reports
        return
    if shown is not None:
        shown.finish(results[0].generated_text)
        _write("\n")
        return
    rows = [{"prompt": r.prompt, "generated_text": r.generated_text,
             "generated_tokens": r.generated_tokens.tolist()} for r in results]
    if output_path:
        out = Path(output_path)
        tmp = out.with_name(out.name + ".incomplete")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        tmp.rename(out)
        print(f"wrote {len(rows)} generations to {out}")
        return
    for row in rows:
        print(f"--- prompt: {row['prompt']!r}\n{row['prompt']}{row['generated_text']}")


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _rank_zero(show: Any, text: str) -> None:
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        show(text)


def _label(prompt: Any) -> str:
    return repr(prompt) if isinstance(prompt, str) else f"chat of {len(prompt)} message(s)"


def generate_defaults() -> run.Partial:
    """One rank (the GPU when there is one) and greedy sampling for 32 tokens."""
    from megatron.core.inference.sampling_params import SamplingParams

    from nemo_lite import lightning as nl

    return run.Partial(
        generate,
        trainer=run.Config(nl.Trainer, devices=1, accelerator="auto", logger=False,
                           enable_checkpointing=False, strategy=run.Config(nl.MegatronStrategy)),
        inference_params=run.Config(SamplingParams, top_k=1, num_tokens_to_generate=32))


def read_prompts(prompts: Optional[list[Any]], prompts_file: Optional[str],
                 chat: bool = False) -> list[Any]:
    """The prompts given on the command line or in a jsonl file (with `chat`, a line may hold
    a conversation: {"messages": [...]})."""
    from nemo_lite.llm.inference.checks import GenerateError
    from nemo_lite.llm.inference.prompts import checked_prompts

    if bool(prompts) == bool(prompts_file):
        raise GenerateError("give prompts='[\"...\"]' or prompts_file=FILE.jsonl (one of them).")
    if prompts:
        return checked_prompts(prompts, chat)
    file = Path(prompts_file)
    if not file.is_file():
        raise GenerateError(f"prompts_file={file}: no such file.")
    keys = (("messages",) if chat else ()) + PROMPT_KEYS
    found = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise GenerateError(f"{file}:{number}: not a JSON line.") from None
        prompt = next((row[k] for k in keys if isinstance(row, dict) and k in row), None)
        if not (isinstance(prompt, str) and prompt) and not (chat and isinstance(prompt, list)):
            raise GenerateError(f"{file}:{number}: no prompt: give each line a non-empty "
                                f"{' / '.join(keys)} field.")
        found.append(prompt)
    return checked_prompts(found, chat)


def check_generate(arguments: dict[str, Any]) -> list[str]:
    """The plan `--dryrun` prints; any problem raises one GenerateError line."""
    import fiddle as fdl

    from nemo_lite.io import load_context
    from nemo_lite.llm.inference.checks import GenerateError, sampling_params, saved_checkpoint
    from nemo_lite.llm.inference.prompts import chat_format, check_fits, tokenized_prompts

    ckpt, tokenizer = saved_checkpoint(arguments.get("path"), "generate")
    chat = bool(arguments.get("chat"))
    texts = read_prompts(arguments.get("prompts"), arguments.get("prompts_file"), chat)
    params = arguments.get("inference_params")
    params = sampling_params(fdl.build(params) if isinstance(params, fdl.Buildable) else params)
    form = chat_format(ckpt, tokenizer) if chat else None
    tokenized = tokenized_prompts(texts, tokenizer, add_BOS=bool(arguments.get("add_BOS")),
                                  chat=form)
    check_fits(tokenized, params.num_tokens_to_generate,
               load_context(ckpt, subpath="model.config").seq_length,
               "the model's context (config.seq_length)")
    output = arguments.get("output_path")
    if output and Path(output).exists():
        raise GenerateError(f"output_path={output} exists: remove it or choose another.")
    if output and not Path(output).parent.is_dir():
        raise GenerateError(f"output_path={output}: its directory does not exist.")
    sampling = ("greedy" if params.top_k == 1 else
                f"temperature {params.temperature}, top_k {params.top_k}, top_p {params.top_p}")
    longest = max(len(p.ids) for p in tokenized)
    return [f"checkpoint: {ckpt}", f"prompts: {len(texts)} (longest {longest} tokens)",
            *([f"chat format: {form.name}"] if form else []),
            f"sampling: {sampling}, {params.num_tokens_to_generate} new tokens",
            f"output: {output or 'printed'}"]
