"""Tiny Hugging Face models with random weights, written locally (nothing is downloaded), with a
BPE tokenizer trained here and saved in Hugging Face's format."""

from __future__ import annotations

import shutil
from pathlib import Path

VOCAB = 300  # the trained tokenizer's size; padded by megatron to 384 (TP1/TP2)
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, vocab_size=VOCAB,
             torch_dtype="float32")

# family -> (transformers config class name, model class name, config arguments)
FAMILIES = {
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(SMALL, rope_theta=500000.0,
                                                       rms_norm_eps=1e-5)),
    "llama3.1": ("LlamaConfig", "LlamaForCausalLM", dict(
        SMALL, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})),
    "llama3.2-tied": ("LlamaConfig", "LlamaForCausalLM", dict(SMALL, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(SMALL, sliding_window=None)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(SMALL, tie_word_embeddings=True,
                                                       rms_norm_eps=1e-6)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(SMALL, head_dim=32,
                                                       tie_word_embeddings=False)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(
        SMALL, num_local_experts=4, num_experts_per_tok=2, sliding_window=None)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(
        n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB,
        activation_function="gelu_new", torch_dtype="float32")),
}


def tokenizer_dir(work: Path) -> Path:
    """A byte-level BPE of VOCAB ids trained on a few lines, in Hugging Face's file format."""
    from nemo_lite.llm.tokenizer import train_bpe_tokenizer
    from tests._support.data import _corpus

    out = work / "hf_tokenizer"
    if not (out / "tokenizer.json").exists():
        train_bpe_tokenizer(str(_corpus(work)), VOCAB, str(out))
    return out


def tiny_model(work: Path, family: str, seed: int = 0) -> Path:
    """`work/<family>`: config.json + model.safetensors (+ the tokenizer files)."""
    import torch
    import transformers

    out = work / family
    if (out / "config.json").exists():
        return out
    config_cls, model_cls, arguments = FAMILIES[family]
    config = getattr(transformers, config_cls)(**arguments)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).eval()
    model.save_pretrained(out)
    tokenizer = tokenizer_dir(work)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tokenizer / name, out / name)
    return out
