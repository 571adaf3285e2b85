"""Tiny random Hugging Face models imported once for every generate / evaluate test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests._support.hf_models import tiny_model

# Written into a tokenizer_config.json: it starts with a special token's text, which must be
# read as that token's id.
CHAT_TEMPLATE = ("{{ eos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="session")
def imported(tmp_path_factory):
    """(HF directory, nemo_lite checkpoint) per family, imported once; "chat" is the tiny Llama
    with a chat template in its tokenizer_config.json."""
    from nemo_lite import llm

    work = tmp_path_factory.mktemp("generate")
    made = {}
    for family in ("llama3", "gpt2", "mixtral", "chat"):
        if family == "chat":  # the same Llama, its tokenizer with a chat template
            source = Path(shutil.copytree(work / "llama3", work / "chat"))
            config = source / "tokenizer_config.json"
            config.write_text(json.dumps({**json.loads(config.read_text()),
                                          "chat_template": CHAT_TEMPLATE}))
        else:
            source = tiny_model(work, family)
        made[family] = (source, llm.import_ckpt(source=f"hf://{source}",
                                                output_path=str(work / f"{family}.nemo")))
    return made
