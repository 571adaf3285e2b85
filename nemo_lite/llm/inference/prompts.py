"""Prompts as the model reads them: text or a chat conversation turned into token ids, and the
one check that they fit the model's context (or a generator's KV cache).

Plain prompts are tokenized as megatron's controller does (`tokenize_prompt`: a leading BOS is
dropped, `add_BOS` puts one back). With `chat=True` a prompt is a conversation (a list of
{"role", "content"} messages; a string is one user message) rendered for the next assistant
turn in the format the model was trained on:
- a checkpoint fine-tuned by `FineTuningDataModule` (full or LoRA): nemo_lite's chat format
  (`llm/data/chat_format.py`), piece by piece, the ids it saw in training;
- otherwise the tokenizer's own chat template (`chat_template` in tokenizer_config.json or
  chat_template.jinja, as an imported Hugging Face model carries it), rendered by
  transformers' `apply_chat_template(add_generation_prompt=True)`;
- neither: a `GenerateError` saying so.
Everything here runs before a model is loaded, so each problem is one line before launch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from nemo_lite.llm.inference.checks import GenerateError


@dataclass(frozen=True)
class Prompt:
    """`text`: what the result reports as its prompt; `ids`: what the model reads."""

    text: str
    ids: list[int]


@dataclass(frozen=True)
class ChatFormat:
    """How a conversation becomes a prompt for this checkpoint; `name` is shown by --dryrun."""

    name: str
    render: Callable[[list[dict[str, str]]], Prompt]


def checked_prompts(prompts: Any, chat: bool = False) -> list[Any]:
    """Strings (or, with `chat`, strings and message lists), at least one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts or [])
    if not prompts:
        raise GenerateError("no prompts: pass prompts=['...'] (a list of strings).")
    for index, prompt in enumerate(prompts):
        if chat and isinstance(prompt, list):
            continue  # a conversation: checked when it is rendered
        if not isinstance(prompt, str) or not prompt:
            raise GenerateError(
                f"prompts[{index}] is {prompt!r}: every prompt must be a non-empty string"
                + (" or a list of chat messages." if chat else "."))
    return prompts


def tokenized_prompts(prompts: Sequence[Any], tokenizer: Any, *, add_BOS: bool = False,
                      chat: Optional[ChatFormat] = None) -> list[Prompt]:
    """`prompts` (checked) as Prompts; `chat`: render each with this chat format."""
    bos = getattr(tokenizer, "bos_id", None)
    if add_BOS and bos is None:
        raise GenerateError("add_BOS=True but the checkpoint's tokenizer has no BOS token: "
                            "leave add_BOS off.")
    out = []
    for prompt in prompts:
        if chat is not None:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            rendered = chat.render(messages)
            text, ids = rendered.text, list(rendered.ids)
        else:
            text, ids = prompt, list(tokenizer.text_to_ids(prompt))
            while ids and ids[0] == bos:  # megatron's tokenize_prompt
                ids.pop(0)
        if add_BOS and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        out.append(Prompt(text, ids))
    return out


def check_fits(prompts: Sequence[Prompt], new_tokens: int, limit: int, limit_name: str) -> None:
    """The longest prompt plus `new_tokens` must fit `limit` tokens (named by `limit_name`)."""
    longest = max(len(p.ids) for p in prompts)
    if longest + new_tokens > limit:
        raise GenerateError(
            f"the longest prompt ({longest} tokens) plus num_tokens_to_generate ({new_tokens}) "
            f"is {longest + new_tokens} tokens, more than {limit_name} holds ({limit}): "
            "shorten the prompt or generate fewer tokens.")


def chat_format(ckpt: Any, tokenizer: Any) -> ChatFormat:
    """The chat format checkpoint `ckpt` was trained on (see the module docstring)."""
    if _fine_tuned_on_chat_data(ckpt):
        return ChatFormat("nemo_lite chat format (FineTuningDataModule)",
                          lambda messages: _nemo_lite_chat(messages, tokenizer))
    directory = _template_directory(tokenizer)
    if directory is None:
        raise GenerateError(
            f"chat=True but checkpoint {ckpt} has no chat format: it was not fine-tuned with "
            "FineTuningDataModule and its tokenizer has no chat_template; send plain prompts "
            "(chat=False).")
    render = _hf_template(directory, tokenizer)
    return ChatFormat(f"the tokenizer's chat template ({directory})", render)


def _fine_tuned_on_chat_data(ckpt: Any) -> bool:
    import fiddle as fdl

    from nemo_lite.io import load_context
    from nemo_lite.io.errors import ContextError
    from nemo_lite.llm.data.finetuning import FineTuningDataModule

    try:
        data = load_context(ckpt, subpath="data", build=False)
    except ContextError:
        return False
    target = fdl.get_callable(data) if isinstance(data, fdl.Buildable) else type(data)
    return isinstance(target, type) and issubclass(target, FineTuningDataModule)


def _nemo_lite_chat(messages: Any, tokenizer: Any) -> Prompt:
    from nemo_lite.llm.data.chat_format import chat_prompt_pieces

    pieces = chat_prompt_pieces(messages, "chat prompt", GenerateError)
    ids = [i for piece in pieces for i in
           ([tokenizer.eos_id] if piece is None else tokenizer.text_to_ids(piece))]
    return Prompt("".join(piece or "" for piece in pieces), ids)


def _template_directory(tokenizer: Any) -> Optional[Path]:
    path = getattr(tokenizer, "path", None)  # HFTokenizer: a directory or its tokenizer.json
    if path is None:
        return None
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    if (directory / "chat_template.jinja").is_file():
        return directory
    config = directory / "tokenizer_config.json"
    if config.is_file():
        try:
            if json.loads(config.read_text()).get("chat_template"):
                return directory
        except (ValueError, AttributeError):
            return None
    return None


def _hf_template(directory: Path, tokenizer: Any) -> Callable[[list[dict[str, str]]], Prompt]:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise GenerateError("chat templates are rendered by transformers: pip install "
                            "'nemo_lite[hf]'.") from None
    hf = AutoTokenizer.from_pretrained(str(directory))

    def render(messages: list[dict[str, str]]) -> Prompt:
        from nemo_lite.llm.data.chat_format import checked_messages

        checked_messages(messages, "chat prompt", GenerateError)
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return Prompt(text, list(tokenizer.text_to_ids(text)))  # as apply_chat_template does

    return render
