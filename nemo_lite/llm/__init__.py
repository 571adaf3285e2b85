"""nemo_lite.llm: GPT-family models, their steps and loss, and data modules.

Names load on first use (megatron-core and Lightning are heavy imports). Recipe modules
resolve here too, as in NeMo (`llm.llama3_8b.pretrain_recipe()`): packages declare them in the
`nemo_lite.recipes` entry-point group (nemo_lite's own `recipes` package does, in pyproject.toml),
so this layer names no recipe package and imports one only when its name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from nemo_lite._lazy import lazy_exports

_EXPORTS = {
    "GPTConfig": "nemo_lite.llm.gpt.config",
    "LlamaConfig": "nemo_lite.llm.gpt.config",
    "MixtralConfig": "nemo_lite.llm.gpt.config",
    "GPTConfig126M": "nemo_lite.llm.gpt.gpt3",
    "Llama3Config": "nemo_lite.llm.gpt.llama",
    "Llama3Config8B": "nemo_lite.llm.gpt.llama",
    "Llama3Config70B": "nemo_lite.llm.gpt.llama",
    "MixtralConfig8x7B": "nemo_lite.llm.gpt.mixtral",
    "GPTModel": "nemo_lite.llm.gpt.model",
    "LlamaModel": "nemo_lite.llm.gpt.model_families",
    "MixtralModel": "nemo_lite.llm.gpt.model_families",
    "count_parameters": "nemo_lite.llm.gpt.params",
    "parameter_breakdown": "nemo_lite.llm.gpt.params",
    "gpt_data_step": "nemo_lite.llm.gpt.steps",
    "gpt_forward_step": "nemo_lite.llm.gpt.steps",
    "MaskedTokenLossReduction": "nemo_lite.llm.loss",
    "MockDataModule": "nemo_lite.llm.data.mock",
    "PreTrainingDataModule": "nemo_lite.llm.data.pretraining",
    "FineTuningDataModule": "nemo_lite.llm.data.finetuning",
    "preprocess": "nemo_lite.llm.data.preprocess",
    "build_stdlib_corpus": "nemo_lite.llm.data.corpus",
    "unigram_entropy": "nemo_lite.llm.data.corpus",
    "ByteTokenizer": "nemo_lite.llm.tokenizer",
    "HFTokenizer": "nemo_lite.llm.tokenizer",
    "SentencePieceTokenizer": "nemo_lite.llm.tokenizer",
    "get_tokenizer": "nemo_lite.llm.tokenizer",
    "train_bpe_tokenizer": "nemo_lite.llm.tokenizer",
    "train": "nemo_lite.llm.api",
    "pretrain": "nemo_lite.llm.api",
    "finetune": "nemo_lite.llm.api",
    "validate": "nemo_lite.llm.api",
    "import_ckpt": "nemo_lite.llm.hf.convert",
    "export_ckpt": "nemo_lite.llm.hf.export",
    "generate": "nemo_lite.llm.inference.generate",
    "load_generator": "nemo_lite.llm.inference.generator",
    "evaluate": "nemo_lite.llm.evaluation.evaluate",
}

_SUBPACKAGES = ("peft", "hf")

__all__ = sorted(_EXPORTS)
_export, _export_names = lazy_exports(__name__, _EXPORTS)


RECIPE_GROUP = "nemo_lite.recipes"


def _recipe_modules() -> dict[str, str]:
    """name -> module of every recipe an installed package declares (entry points)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=RECIPE_GROUP)}


def _recipe_names() -> tuple[str, ...]:
    return tuple(_recipe_modules())


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return _export(name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if not name.startswith("_"):
        module_name = _recipe_modules().get(name)
        if module_name is not None:
            module = importlib.import_module(module_name)
            globals()[name] = module
            return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*_export_names(), *_SUBPACKAGES, *_recipe_names()})
