"""llm.generate on megatron-core's static inference engine, checked against transformers on the
same weights (a tiny random model written locally and imported with llm.import_ckpt).

Greedy ids equal transformers' `generate(do_sample=False)` for a batch of prompts of different
lengths; the KV cache is used (the tokens fed to the model grow linearly with the tokens
generated) and its log-probabilities equal a full uncached forward of transformers to 1e-5;
seeded sampling repeats; bad input is one clear error before anything is loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PROMPTS = ["def function_3(x):", "def f", "    return x * 12 + 5\ndef function_"]
NEW = 12
SCRIPT = Path(__file__).parent / "scripts" / "generate_run.py"


def params(**kwargs):
    from megatron.core.inference.sampling_params import SamplingParams

    return SamplingParams(**{"num_tokens_to_generate": NEW, **kwargs})


def hf_greedy(source, prompt_ids: list[int], eos: int) -> list[int]:
    """transformers' greedy continuation; like megatron's, without the end-of-document id."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source).eval()
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=NEW, eos_token_id=eos, pad_token_id=eos)
    new = out[0, len(prompt_ids):].tolist()
    return new[:new.index(eos)] if eos in new else new


@pytest.mark.parametrize("family", ["llama3", "gpt2", "mixtral"])
def test_greedy_ids_equal_transformers_for_a_batch_of_different_lengths(imported, family):
    from nemo_lite import llm
    from nemo_lite.io import load_context

    source, ckpt = imported[family]
    eos = load_context(ckpt, subpath="model.tokenizer").eos_id
    results = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=params(top_k=1))
    assert [r.prompt for r in results] == PROMPTS
    assert len({len(r.prompt_tokens) for r in results}) == 3  # three different lengths
    for result in results:
        ours = result.generated_tokens.tolist()
        assert ours == hf_greedy(source, list(result.prompt_tokens), eos), result.prompt
        assert result.generated_text == load_context(
            ckpt, subpath="model.tokenizer").ids_to_text(ours)


def test_the_kv_cache_feeds_each_position_once_and_matches_an_uncached_forward(imported):
    """Decoding N tokens feeds the model max_prompt + N - 1 positions per row (each once),
    not a growing prefix per step; the cached log-probabilities of the generated tokens equal
    transformers' full forward over the whole sequence (no cache) to 1e-5."""
    from megatron.core.tensor_parallel import VocabParallelEmbedding
    from transformers import AutoModelForCausalLM

    from nemo_lite import llm

    source, ckpt = imported["llama3"]
    fed = []

    def count(module, args):  # the embedding's input: the token ids fed to the model
        if isinstance(module, VocabParallelEmbedding):
            fed.append(args[0].numel())

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        results = llm.generate(path=str(ckpt), prompts=PROMPTS[:2], inference_params=params(
            top_k=1, return_log_probs=True))
    finally:
        handle.remove()
    rows, longest = len(results), max(len(r.prompt_tokens) for r in results)
    steps = max(len(r.prompt_tokens) + len(r.generated_tokens) for r in results) - 1
    assert sum(fed) <= rows * steps and sum(fed) >= rows * (longest + 1)
    model = AutoModelForCausalLM.from_pretrained(source).eval()
    for result in results:
        prompt, new = list(result.prompt_tokens), result.generated_tokens.tolist()
        with torch.no_grad():
            logits = model(torch.tensor([prompt + new]), use_cache=False).logits[0]
        reference = torch.log_softmax(logits.double(), -1)[len(prompt) - 1:-1]
        reference = reference.gather(1, torch.tensor(new).unsqueeze(1)).squeeze(1)
        ours = torch.tensor(result.generated_log_probs, dtype=torch.float64)[-len(new):]
        assert (ours - reference).abs().max().item() <= 1e-5


def test_seeded_sampling_repeats_and_the_seed_matters(imported):
    """Twice on one loaded generator and once through llm.generate: seed 7 gives the same
    text each time; seed 8 other text."""
    from nemo_lite import llm

    _, ckpt = imported["llama3"]
    sample = params(temperature=1.0, top_k=0, top_p=0.9)
    with llm.load_generator(str(ckpt)) as generator:
        first, again = (generator.generate(PROMPTS, sample, random_seed=7) for _ in range(2))
        first, again = [r.generated_text for r in first], [r.generated_text for r in again]
    once = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=sample,
                        random_seed=7, text_only=True)
    other = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=sample,
                         random_seed=8, text_only=True)
    assert first == again == once and first != other


def test_a_bf16_trainer_generates_in_bf16(imported):
    """trainer plugins=MegatronMixedPrecision("bf16-mixed"): the model computes in bf16 (wrapped
    as the strategy trains it); its first greedy token per row is fp32's, the rest may part."""
    import megatron.core.transformer.module as mcore_module

    from nemo_lite import lightning as nl
    from nemo_lite import llm

    _, ckpt = imported["llama3"]
    seen = []
    forward = mcore_module.Float16Module.forward

    def spy(self, *args, **kwargs):
        seen.append(next(self.module.parameters()).dtype)
        return forward(self, *args, **kwargs)

    mcore_module.Float16Module.forward = spy
    try:
        bf16 = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=params(top_k=1),
                            trainer=nl.Trainer(devices=1, accelerator="cpu", logger=False,
                                               strategy=nl.MegatronStrategy(),
                                               plugins=nl.MegatronMixedPrecision("bf16-mixed")))
    finally:
        mcore_module.Float16Module.forward = forward
    fp32 = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=params(top_k=1))
    assert seen and set(seen) == {torch.bfloat16}
    assert [r.generated_tokens[0] for r in bf16] == [r.generated_tokens[0] for r in fp32]


def test_stop_strings_end_each_row_independently(imported):
    """A stop string taken from the middle of row 0's greedy text ends row 0 at the first token
    completing it (the text cut before it); the other rows are what they were without it."""
    from nemo_lite import llm
    from nemo_lite.io import load_context

    _, ckpt = imported["llama3"]
    tokenizer = load_context(ckpt, subpath="model.tokenizer")
    plain = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=params(top_k=1))
    tokens = plain[0].generated_tokens.tolist()
    word = next(w for k in range(2, len(tokens)) if (w := tokenizer.ids_to_text(tokens[k:k + 1]))
                and w not in tokenizer.ids_to_text(tokens[:k]))
    stopped = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=params(
        top_k=1, stop_words=[word]))
    kept = stopped[0].generated_tokens.tolist()
    assert 0 < len(kept) < len(tokens) and kept == tokens[:len(kept)]
    assert word in tokenizer.ids_to_text(kept) and word not in tokenizer.ids_to_text(kept[:-1])
    assert word not in stopped[0].generated_text
    assert plain[0].generated_text.startswith(stopped[0].generated_text)
    for before, after in zip(plain[1:], stopped[1:], strict=True):
        if word not in before.generated_text:
            assert after.generated_tokens.tolist() == before.generated_tokens.tolist()


def test_a_checkpoint_without_a_tokenizer_is_refused_before_loading(imported, tmp_path):
    """The saved model had tokenizer=None: one error naming `tokenizer=`, before any rank."""
    import shutil

    from nemo_lite import llm
    from nemo_lite.io import load_context, save_context
    from nemo_lite.llm.inference.checks import GenerateError

    _, ckpt = imported["llama3"]
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    shutil.rmtree(bare / "context")
    save_context(bare, model=llm.GPTModel(load_context(ckpt, subpath="model.config")))
    with pytest.raises(GenerateError, match=r"saved no tokenizer .*tokenizer=\.\.\."):
        llm.generate(path=str(bare), prompts=["hi"])


def test_bad_input_is_one_clear_error(imported, tmp_path):
    from nemo_lite import lightning as nl
    from nemo_lite import llm
    from nemo_lite.llm.inference.checks import GenerateError

    _, ckpt = imported["llama3"]
    cases = [
        (dict(prompts=[]), "no prompts"),
        (dict(prompts=["ok", ""]), "prompts[1]"),
        (dict(prompts=["x " * 200]), "more than the model's context"),
        (dict(prompts=["hi"], inference_params={"top_k": 1}), "pass megatron's SamplingParams"),
        (dict(prompts=["hi"], inference_params=params(top_k=2, top_p=0.5)), "not both"),
        (dict(prompts=["hi"], inference_params=params(stop_words="\n")), "list of non-empty"),
        (dict(prompts=["hi"], trainer=nl.Trainer(
            devices=1, accelerator="cpu", strategy=nl.MegatronStrategy(
                pipeline_model_parallel_size=1, context_parallel_size=2))),
         "without context parallelism"),
    ]
    for arguments, message in cases:
        with pytest.raises(GenerateError, match=message.replace("[", r"\[")):
            llm.generate(path=str(ckpt), **arguments)


@pytest.mark.parametrize("family,tp,pp,ep", [("llama3", 2, 1, 1), ("llama3", 1, 2, 1),
                                             ("llama3", 1, 1, 1), ("mixtral", 1, 1, 2)],
                         ids=["TP2", "PP2", "DP2", "mixtral-EP2"])
def test_two_ranks_give_the_one_rank_tokens_greedy_and_seeded(imported, tmp_path, family, tp,
                                                                pp, ep):
    """2 CPU ranks launched by nl.Trainer(devices=2) (DP2 when TP = PP = EP = 1): greedy ids
    equal one rank's (which equal transformers'), and top-p sampling with seed 7 gives the same
    tokens as on one rank."""
    from nemo_lite import llm

    _, ckpt = imported[family]
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(ckpt), str(out), str(tp), str(pp),
                           str(ep), json.dumps(PROMPTS)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = json.loads(out.read_text())
    one = {"greedy": llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=params(
               top_k=1)),
           "sampled": llm.generate(path=str(ckpt), prompts=PROMPTS, random_seed=7,
                                   inference_params=params(temperature=1.0, top_p=0.9))}
    for kind, results in one.items():
        assert [r["tokens"] for r in ranks[kind]] == [
            r.generated_tokens.tolist() for r in results], kind
        assert [r["text"] for r in ranks[kind]] == [r.generated_text for r in results]


def test_the_cli_writes_the_same_generations_as_the_api(imported, tmp_path):
    """`nemo llm generate path=... prompts_file=... output_path=...`: the jsonl holds what
    llm.generate returns for the same prompts and settings."""
    from nemo_lite import llm
    from tests.cli.test_cli import cli

    _, ckpt = imported["llama3"]
    (tmp_path / "prompts.jsonl").write_text("".join(
        json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    proc = cli("llm", "generate", f"path={ckpt}", "prompts_file=prompts.jsonl",
               "output_path=out.jsonl", f"inference_params.num_tokens_to_generate={NEW}", "-y",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = llm.generate(path=str(ckpt), prompts=PROMPTS, inference_params=params(top_k=1))
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [r["generated_tokens"] for r in rows] == [
        r.generated_tokens.tolist() for r in expected]
    assert [r["generated_text"] for r in rows] == [r.generated_text for r in expected]


@pytest.mark.parametrize("args,words", [
    ([], "generate needs path=CHECKPOINT"),
    (["path={ckpt}", 'prompts=["a"]', "prompts_file=p.jsonl"], "(one of them)"),
    (["path={ckpt}", "prompts_file=missing.jsonl"], "missing.jsonl: no such file"),
    (["path={ckpt}", 'prompts=["a"]', "output_path=taken.jsonl"], "taken.jsonl exists"),
    (["path={ckpt}", 'prompts=["a"]', "inference_params.num_tokens_to_generate=5000"],
     "more than the model's context"),
])
def test_bad_cli_input_is_one_line_and_exit_2(imported, tmp_path, args, words):
    from tests.cli.test_cli import cli

    _, ckpt = imported["llama3"]
    (tmp_path / "taken.jsonl").write_text("")
    proc = cli("llm", "generate", *[a.replace("{ckpt}", str(ckpt)) for a in args], "-y",
               cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr[-2000:]
