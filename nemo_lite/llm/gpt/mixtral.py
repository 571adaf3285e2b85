"""Mixtral model configs at their published shapes (Mistral AI's Mixtral-8x7B-v0.1 config.json).

A dataclass: constructing it builds nothing. `seq_length` is 4096 as in NeMo's MixtralConfig8x7B
(the release supports 32K positions; RoPE has no per-position weights, so only memory limits it).
"""

from dataclasses import dataclass
from typing import Optional

from nemo_lite.llm.gpt.config import MixtralConfig


@dataclass
class MixtralConfig8x7B(MixtralConfig):
    """Mixtral 8x7B: 46.7e9 parameters, 12.9e9 active per token (8 SwiGLU experts, top-2)."""

    num_layers: int = 32
    hidden_size: int = 4096
    ffn_hidden_size: int = 14_336
    num_attention_heads: int = 32
    num_query_groups: int = 8
    vocab_size: Optional[int] = 32_000
    seq_length: int = 4096
    num_moe_experts: Optional[int] = 8
    moe_router_topk: int = 2
    rotary_base: int = 1_000_000
    layernorm_epsilon: float = 1e-5
