"""Chat prompts and token streaming of llm.generate.

A chat prompt of a model whose tokenizer has a chat template is the ids transformers'
`apply_chat_template(add_generation_prompt=True)` gives, and its greedy continuation is
transformers'; a checkpoint with no chat format is refused. Streaming hands out each row's
growing text, which ends as the returned text; the CLI streams a single prompt.
(The chat format of a model fine-tuned by FineTuningDataModule: tests/hf/test_hf_finetune.py.)
"""

from __future__ import annotations

import pytest

from tests.inference.test_generate import NEW, PROMPTS, hf_greedy, params

CONVERSATION = [{"role": "system", "content": "Answer in code."},
                {"role": "user", "content": "def function_3(x):"}]


def hf_chat_ids(source, messages) -> list[int]:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(source).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_chat_prompts_are_the_tokenizers_chat_template_and_continue_as_transformers(imported):
    from nemo_lite import llm
    from nemo_lite.io import load_context

    source, ckpt = imported["chat"]
    eos = load_context(ckpt, subpath="model.tokenizer").eos_id
    results = llm.generate(path=str(ckpt), prompts=[CONVERSATION, "def f"], chat=True,
                           inference_params=params(top_k=1))
    expected = [hf_chat_ids(source, CONVERSATION),
                hf_chat_ids(source, [{"role": "user", "content": "def f"}])]
    assert expected[0][0] == eos  # the template's leading special token, read as its id
    for result, ids in zip(results, expected, strict=True):
        assert list(result.prompt_tokens) == ids
        assert result.generated_tokens.tolist() == hf_greedy(source, ids, eos)
    assert results[0].prompt.endswith("<|user|>def function_3(x):\n<|assistant|>")


def test_chat_without_a_chat_format_is_refused_before_loading(imported):
    from nemo_lite import llm
    from nemo_lite.llm.inference.checks import GenerateError

    _, ckpt = imported["gpt2"]  # imported, never fine-tuned, no chat_template
    with pytest.raises(GenerateError, match="has no chat format"):
        llm.generate(path=str(ckpt), prompts=["hi"], chat=True)
    with pytest.raises(GenerateError, match=r"prompts\[0\]"):
        llm.generate(path=str(ckpt), prompts=[[{"role": "user", "content": "hi"}]])


def test_streamed_text_grows_to_the_returned_text_row_by_row(imported):
    """on_text sees each row's text at every new token, each growing the last, the final
    one the returned text (cut at the stop string for the row that has one)."""
    from nemo_lite import llm

    _, ckpt = imported["llama3"]
    with llm.load_generator(str(ckpt)) as generator:
        plain = generator.generate(PROMPTS, params(top_k=1))
        stop = plain[1].generated_text[3:5]  # stops row 1 early, maybe others
        seen: dict[int, list[str]] = {}
        streamed = generator.generate(PROMPTS, params(top_k=1, stop_words=[stop]),
                                      on_text=lambda row, text: seen.setdefault(row, []).append(
                                          text))
    assert sorted(seen) == [0, 1, 2]
    for row, result in enumerate(streamed):
        texts = seen[row]
        assert len(texts) >= NEW // 2, texts  # one call per decoding step
        # each text is a prefix of the next, but for a character whose bytes are still
        # arriving (random weights pick such tokens): U+FFFD at the end, ShownText's case
        assert all(b.startswith(a.rstrip("\ufffd")) for a, b in zip(
            texts, [*texts[1:], result.generated_text], strict=True))
        assert stop not in texts[-1]
    assert len(streamed[1].generated_text) < len(plain[1].generated_text)
    assert [r.generated_text for r in streamed] == [
        r.generated_text.split(stop)[0] for r in plain]


def test_streamed_text_holds_back_what_may_become_a_stop_string():
    from nemo_lite.llm.inference.stopping import ShownText, visible_text

    stops = ["\n\n", "END"]
    assert [visible_text(t, stops) for t in ["a", "a\n", "a\nb", "a\nbE", "a\nbEN", "a\nbEND!",
                                             "x\n\nEND"]] == [
        "a", "a", "a\nb", "a\nb", "a\nb", "a\nb", "x"]
    written: list[str] = []
    shown = ShownText(written.append)
    for text in ["h", "h\ufffd", "hé", "hé!"]:  # a character whose bytes are still arriving
        shown.update(text)
    shown.finish("hé!?")
    assert written == ["h", "é", "!", "?"]


def test_the_cli_streams_one_prompt_and_chats(imported, tmp_path):
    """`nemo llm generate prompts='["..."]'` prints the prompt's continuation as it comes;
    chat=true renders it with the tokenizer's chat template first: the same text as the API."""
    from nemo_lite import llm
    from tests.cli.test_cli import cli

    _, ckpt = imported["chat"]
    proc = cli("llm", "generate", f"path={ckpt}", 'prompts=["def f"]', "chat=true",
               f"inference_params.num_tokens_to_generate={NEW}", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (expected,) = llm.generate(path=str(ckpt), prompts=["def f"], chat=True, text_only=True,
                               inference_params=params(top_k=1))
    assert f"--- prompt: 'def f'\n{expected}\n" in proc.stdout, proc.stdout[-2000:]
