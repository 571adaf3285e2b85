"""Generation speed: nemo_lite (megatron-core's static engine, KV cache) against transformers'
`generate` on the same weights, measured in one run, at batch 1 and batch 8.

Writes a small random Llama (hidden 512, 8 layers, 8 heads / 2 KV groups, ffn 1536, fp32) with a
BPE tokenizer trained here on the stdlib corpus, imports it with llm.import_ckpt, loads it once
with llm.load_generator, then for each batch size:
  time to first token  a generation of 1 token (the prompt's forward + one sample)
  decode tokens/s      rows x (N - 1) / (time for N tokens - time for 1 token)
Both sides generate exactly N greedy tokens (end-of-text disabled). Each figure is the best of
--repeat runs after one warm-up. Prints the table and nemo_lite / transformers ratios (target:
decode >= 1.0 at batch 8).

    python benchmarks/generate.py --work /tmp/gen_bench [--new-tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

SHAPE = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
             rms_norm_eps=1e-5, rope_theta=500000.0, torch_dtype="float32")


def write_model(work: Path) -> tuple[Path, list[str]]:
    """A random Llama with a locally trained tokenizer; 8 prompts of 40-70 tokens."""
    import torch
    import transformers

    from nemo_lite.llm.data.corpus import build_stdlib_corpus
    from nemo_lite.llm.tokenizer import train_bpe_tokenizer

    corpus = work / "corpus.jsonl"
    build_stdlib_corpus(corpus, max_bytes=4_000_000)
    tokenizer = train_bpe_tokenizer(str(corpus), 4096, str(work / "tokenizer"))
    out = work / "hf"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **SHAPE, vocab_size=tokenizer.vocab_size, bos_token_id=None,
        eos_token_id=tokenizer.eos_id))
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(work / "tokenizer" / name, out / name)
    prompts = []
    for line in corpus.read_text().splitlines():
        text = json.loads(line)["text"]
        for start in range(0, len(text) - 400, 997):
            piece = text[start:start + 400]
            ids = tokenizer.text_to_ids(piece)
            if 40 <= len(ids) <= 120:
                prompts.append(tokenizer.ids_to_text(ids[: 40 + 4 * len(prompts)]))
            if len(prompts) == 8:
                return out, prompts
    raise SystemExit("the corpus gave fewer than 8 prompts")


def best(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def nemo_times(ckpt: Path, prompts: list[str], new: int, repeat: int) -> dict[int, tuple]:
    from megatron.core.inference.sampling_params import SamplingParams

    from nemo_lite import llm

    def params(n: int) -> SamplingParams:
        return SamplingParams(top_k=1, num_tokens_to_generate=n, termination_id=-1)

    out = {}
    with llm.load_generator(str(ckpt), max_batch_size=8) as generator:
        for rows in (1, 8):
            batch = prompts[:rows]
            check = generator.generate(batch, params(new))
            assert all(len(r.generated_tokens) == new for r in check), "stopped early"
            first = best(lambda b=batch: generator.generate(b, params(1)), repeat)
            full = best(lambda b=batch: generator.generate(b, params(new)), repeat)
            out[rows] = (first, full)
    return out


def hf_times(source: Path, prompts: list[str], new: int, repeat: int) -> dict[int, tuple]:
    import torch
    from transformers import AutoModelForCausalLM

    from nemo_lite.llm.tokenizer import HFTokenizer

    tokenizer = HFTokenizer(str(source))
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    pad = tokenizer.eos_id
    out = {}
    for rows in (1, 8):
        ids = [tokenizer.text_to_ids(p) for p in prompts[:rows]]
        width = max(map(len, ids))
        x = torch.tensor([[pad] * (width - len(i)) + i for i in ids])  # left-padded
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])

        def run(n: int, x=x, mask=mask) -> None:
            with torch.no_grad():
                model.generate(x, attention_mask=mask, do_sample=False, max_new_tokens=n,
                               min_new_tokens=n, pad_token_id=pad)

        out[rows] = (best(lambda: run(1), repeat), best(lambda: run(new), repeat))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    from nemo_lite import llm

    torch.set_num_threads(args.threads)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    source, prompts = write_model(args.work)
    ckpt = llm.import_ckpt(source=f"hf://{source}", output_path=str(args.work / "nemo"))
    new = args.new_tokens
    ours = nemo_times(ckpt, prompts, new, args.repeat)
    theirs = hf_times(source, prompts, new, args.repeat)
    print(f"small Llama ({SHAPE['num_hidden_layers']} layers, hidden {SHAPE['hidden_size']}, "
          f"fp32), {new} new tokens, prompts {min(map(len, prompts))}-"
          f"{max(map(len, prompts))} chars, torch threads {args.threads}, "
          f"python {sys.version.split()[0]}")
    print(f"{'batch':>5} {'':12} {'TTFT ms':>9} {'decode tok/s':>13}")
    for rows in (1, 8):
        line = {}
        for name, (first, full) in (("nemo_lite", ours[rows]), ("transformers", theirs[rows])):
            rate = rows * (new - 1) / (full - first)
            line[name] = (first, rate)
            print(f"{rows:>5} {name:12} {first * 1e3:9.1f} {rate:13.1f}")
        print(f"{rows:>5} {'ratio':12} {line['transformers'][0] / line['nemo_lite'][0]:9.2f} "
              f"{line['nemo_lite'][1] / line['transformers'][1]:13.2f}   (TTFT: transformers / "
              "nemo_lite; decode: nemo_lite / transformers; target decode >= 1.0 at batch 8)")


if __name__ == "__main__":
    main()
