"""nemo_lite.llm: GPT-family models, their steps and loss, and data modules.

Names load on first use (megatron-core and Lightning are heavy imports).
"""

from __future__ import annotations

from nemo_lite._lazy import lazy_exports

_EXPORTS = {
    "GPTConfig": "nemo_lite.llm.gpt.config",
    "LlamaConfig": "nemo_lite.llm.gpt.config",
    "MixtralConfig": "nemo_lite.llm.gpt.config",
    "GPTModel": "nemo_lite.llm.gpt.model",
    "gpt_data_step": "nemo_lite.llm.gpt.steps",
    "gpt_forward_step": "nemo_lite.llm.gpt.steps",
    "MaskedTokenLossReduction": "nemo_lite.llm.loss",
    "MockDataModule": "nemo_lite.llm.data.mock",
    "ByteTokenizer": "nemo_lite.llm.tokenizer",
    "train": "nemo_lite.llm.api",
    "pretrain": "nemo_lite.llm.api",
    "finetune": "nemo_lite.llm.api",
    "validate": "nemo_lite.llm.api",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
