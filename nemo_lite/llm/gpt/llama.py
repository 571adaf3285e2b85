"""Llama 3 model configs at their published shapes (Meta's Llama 3 model card / config.json).

Plain dataclasses: constructing one builds nothing; `configure_model()` builds the model inside
the strategy. `vocab_size` is set to the released tokenizer's size so the model has the
published shape whatever tokenizer the data module carries (mock data's byte ids fit in it).
"""

from dataclasses import dataclass
from typing import Optional

from nemo_lite.llm.gpt.config import LlamaConfig


@dataclass
class Llama3Config(LlamaConfig):
    """What every Llama 3 size shares: 128K-token tiktoken vocabulary, 8 KV groups, RoPE base 5e5."""

    num_query_groups: int = 8
    vocab_size: Optional[int] = 128_256
    seq_length: int = 8192
    rotary_base: int = 500_000
    init_method_std: float = 0.01
    layernorm_epsilon: float = 1e-5


@dataclass
class Llama3Config8B(Llama3Config):
    """Llama 3 8B: 8.03e9 parameters (32 layers, hidden 4096, SwiGLU 14336, 32 heads)."""

    num_layers: int = 32
    hidden_size: int = 4096
    ffn_hidden_size: int = 14_336
    num_attention_heads: int = 32


@dataclass
class Llama3Config70B(Llama3Config):
    """Llama 3 70B: 70.6e9 parameters (80 layers, hidden 8192, SwiGLU 28672, 64 heads)."""

    num_layers: int = 80
    hidden_size: int = 8192
    ffn_hidden_size: int = 28_672
    num_attention_heads: int = 64
