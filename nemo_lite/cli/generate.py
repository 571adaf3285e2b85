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
from pathlib import Path
from typing import Any, Optional

import nemo_run as run

PROMPT_KEYS = ("prompt", "input", "text")


# (no `from __future__ import annotations`: NeMo-Run's help reads these annotations as types)
def generate(path: str = "", prompts: Optional[list[str]] = None,
             prompts_file: Optional[str] = None, output_path: Optional[str] = None,
             trainer: Any = None, inference_params: Any = None, max_batch_size: int = 8,
             random_seed: Optional[int] = None, add_BOS: bool = False) -> None:
    """Generate from checkpoint `path`: print each prompt's text, or write them as jsonl."""
    import torch.distributed as dist

    from nemo_lite import llm

    texts = read_prompts(prompts, prompts_file)
    results = llm.generate(path=path, prompts=texts, trainer=trainer,
                           inference_params=inference_params, max_batch_size=max_batch_size,
                           random_seed=random_seed, add_BOS=add_BOS)
    if dist.is_initialized() and dist.get_rank() != 0:  # every rank has them; rank 0 reports
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


def generate_defaults() -> run.Partial:
    """One rank (the GPU when there is one) and greedy sampling for 32 tokens."""
    from megatron.core.inference.sampling_params import SamplingParams

    from nemo_lite import lightning as nl

    return run.Partial(
        generate,
        trainer=run.Config(nl.Trainer, devices=1, accelerator="auto", logger=False,
                           enable_checkpointing=False, strategy=run.Config(nl.MegatronStrategy)),
        inference_params=run.Config(SamplingParams, top_k=1, num_tokens_to_generate=32))


def read_prompts(prompts: Optional[list[str]], prompts_file: Optional[str]) -> list[str]:
    from nemo_lite.llm.inference.checks import GenerateError, checked_prompts

    if bool(prompts) == bool(prompts_file):
        raise GenerateError("give prompts='[\"...\"]' or prompts_file=FILE.jsonl (one of them).")
    if prompts:
        return checked_prompts(prompts)
    file = Path(prompts_file)
    if not file.is_file():
        raise GenerateError(f"prompts_file={file}: no such file.")
    texts = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise GenerateError(f"{file}:{number}: not a JSON line.") from None
        text = next((row[k] for k in PROMPT_KEYS if isinstance(row, dict) and k in row), None)
        if not isinstance(text, str) or not text:
            raise GenerateError(f"{file}:{number}: no prompt: give each line a non-empty "
                                f"{' / '.join(PROMPT_KEYS)} field.")
        texts.append(text)
    return checked_prompts(texts)


def check_generate(arguments: dict[str, Any]) -> list[str]:
    """The plan `--dryrun` prints; any problem raises one GenerateError line."""
    import fiddle as fdl

    from nemo_lite.io import load_context
    from nemo_lite.llm.inference.checks import GenerateError, sampling_params, saved_checkpoint

    ckpt, tokenizer = saved_checkpoint(arguments.get("path"), "generate")
    texts = read_prompts(arguments.get("prompts"), arguments.get("prompts_file"))
    params = arguments.get("inference_params")
    params = sampling_params(fdl.build(params) if isinstance(params, fdl.Buildable) else params)
    longest = max(len(tokenizer.text_to_ids(t)) for t in texts)
    context = load_context(ckpt, subpath="model.config").seq_length
    if longest + params.num_tokens_to_generate > context:
        raise GenerateError(
            f"the longest prompt ({longest} tokens) plus num_tokens_to_generate "
            f"({params.num_tokens_to_generate}) is more than the model's context of {context} "
            "(config.seq_length): shorten the prompt or generate fewer tokens.")
    output = arguments.get("output_path")
    if output and Path(output).exists():
        raise GenerateError(f"output_path={output} exists: remove it or choose another.")
    if output and not Path(output).parent.is_dir():
        raise GenerateError(f"output_path={output}: its directory does not exist.")
    sampling = ("greedy" if params.top_k == 1 else
                f"temperature {params.temperature}, top_k {params.top_k}, top_p {params.top_p}")
    return [f"checkpoint: {ckpt}", f"prompts: {len(texts)} (longest {longest} tokens)",
            f"sampling: {sampling}, {params.num_tokens_to_generate} new tokens",
            f"output: {output or 'printed'}"]
