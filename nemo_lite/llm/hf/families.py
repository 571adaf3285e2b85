"""Which converter handles a Hugging Face architecture, and the model class it becomes."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from nemo_lite.llm.hf.source import HFCheckpointError

# each module: ARCHITECTURES, rules(config), config_from_hf(hf, dtype), config_to_hf(config, ...)
FAMILY_MODULES = ("nemo_lite.llm.hf.llama", "nemo_lite.llm.hf.mixtral", "nemo_lite.llm.hf.gpt2")


def _families() -> list[ModuleType]:
    return [importlib.import_module(name) for name in FAMILY_MODULES]


def family_for(architecture: str) -> ModuleType:
    """The family module (rules, config_from_hf, config_to_hf) of `architecture`."""
    for module in _families():
        if architecture in module.ARCHITECTURES:
            return module
    raise HFCheckpointError(
        f"architecture {architecture!r} is not supported: supported are "
        f"{', '.join(supported())}.")


def supported() -> list[str]:
    return [name for module in _families() for name in module.ARCHITECTURES]


def model_class(config: Any) -> Any:
    """The LightningModule class a converted config is wrapped in (NeMo's names)."""
    from nemo_lite import llm

    if getattr(config, "num_moe_experts", None):
        return llm.MixtralModel
    if isinstance(config, llm.LlamaConfig):
        return llm.LlamaModel
    return llm.GPTModel


def architecture_of(config: Any) -> str:
    """The Hugging Face architecture a nemo_lite config exports as."""
    from nemo_lite import llm

    if getattr(config, "num_moe_experts", None):
        return "MixtralForCausalLM"
    if isinstance(config, llm.LlamaConfig):
        if config.qk_layernorm:
            return "Qwen3ForCausalLM"
        if config.add_qkv_bias:
            return "Qwen2ForCausalLM"
        return "LlamaForCausalLM"
    if config.position_embedding_type == "learned_absolute":
        return "GPT2LMHeadModel"
    raise HFCheckpointError(
        f"{type(config).__name__} has no Hugging Face counterpart here: export supports "
        f"{', '.join(supported())}.")
