"""GPT-3-family shapes (Brown et al. 2020, table 2.1) under NeMo's names.

`GPTConfig126M` is GPT-3 Small: the GPT-2-small body (12 x 768) with 2048 learned positions.
The paper calls it 125M; NeMo calls it 126M. With the GPT-2 BPE vocabulary (50257 tokens,
tied input/output embedding) it has 125.2e6 parameters (125.3e6 with the vocabulary padded to
50304, as megatron pads it for TP=1). GPT-2 small itself has 1024 positions: 124.4e6.
"""

from dataclasses import dataclass
from typing import Optional

from nemo_lite.llm.gpt.config import GPTConfig


@dataclass
class GPTConfig126M(GPTConfig):
    """12 layers, hidden 768, 12 heads, GELU MLP 3072, LayerNorm, biases, tied embeddings."""

    num_layers: int = 12
    hidden_size: int = 768
    ffn_hidden_size: int = 3072
    num_attention_heads: int = 12
    seq_length: int = 2048
    vocab_size: Optional[int] = 50_257
