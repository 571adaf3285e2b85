"""Parameter-efficient fine-tuning (NeMo 2.0's `llm.peft`): `LoRA`, `DoRA`, `merge` (in memory),
`merge_lora` (checkpoint -> full checkpoint), `export_lora` (adapters -> Hugging Face PEFT).

Names load on first use: `import nemo_lite.llm.peft` imports neither torch nor megatron.
"""

from __future__ import annotations

from typing import Any

from nemo_lite._lazy import lazy_exports

_EXPORTS = {
    "LoRA": "nemo_lite.llm.peft.lora",
    "DoRA": "nemo_lite.llm.peft.dora",
    "merge": "nemo_lite.llm.peft.lora",
    "LoRAConfigError": "nemo_lite.llm.peft.lora",
    "merge_lora": "nemo_lite.llm.peft.merged_checkpoint",
    "export_lora": "nemo_lite.llm.peft.hf_adapter",
    "PEFTCheckpointError": "nemo_lite.llm.peft.saved",
}

__all__ = sorted(_EXPORTS)
_export, _export_names = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    return _export(name)


def __dir__() -> list[str]:
    return _export_names()
