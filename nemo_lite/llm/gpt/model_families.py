"""NeMo's per-family LightningModules (`llm.LlamaModel`, `llm.MixtralModel`).

They are `GPTModel` with the family's default config, so `run.Config(llm.LlamaModel,
config=run.Config(llm.Llama3Config8B))` reads as in NeMo; all behaviour is GPTModel's.
"""

from __future__ import annotations

from typing import Any

from nemo_lite.llm.gpt.config import LlamaConfig, MixtralConfig
from nemo_lite.llm.gpt.model import GPTModel


class LlamaModel(GPTModel):
    def __init__(self, config: LlamaConfig | None = None, optim: Any = None,
                 tokenizer: Any = None, model_transform: Any = None) -> None:
        super().__init__(config or LlamaConfig(), optim=optim, tokenizer=tokenizer,
                         model_transform=model_transform)


class MixtralModel(GPTModel):
    def __init__(self, config: MixtralConfig | None = None, optim: Any = None,
                 tokenizer: Any = None, model_transform: Any = None) -> None:
        super().__init__(config or MixtralConfig(), optim=optim, tokenizer=tokenizer,
                         model_transform=model_transform)
