"""Activation functions megatron-core lacks in a plain, CPU-safe form.

GPT-2's "gelu_new" is the tanh approximation of GELU; megatron's own copies
(`openai_gelu`, `fast_gelu`) are wrapped in its jit fuser, which compiles on first use.
"""

import torch


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (Hugging Face's gelu_new / gelu_pytorch_tanh)."""
    return torch.nn.functional.gelu(x, approximate="tanh")
