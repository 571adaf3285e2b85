"""Parameter counts of a GPT-family config, computed from its shapes without building anything.

Counts what megatron's GPTModel builds for the whole model (every pipeline stage, every expert,
every tensor-parallel shard together), so a 70B recipe can say "70.6e9" on a laptop in
microseconds. tests/recipes check the formula against real megatron models parameter for
parameter.

Vocabulary: by default the count uses the vocabulary as given (`vocab_size`, else
`config.vocab_size`), unpadded, which is how published sizes are quoted (Llama 3 8B = 8.03e9
with 128256 tokens). `pad_vocab=True` counts the embedding rows megatron actually allocates
(`config.padded_vocab_size`: a multiple of make_vocab_size_divisible_by x TP).
"""

from __future__ import annotations

from typing import Any

# Config features whose parameters this formula does not model: refuse rather than miscount.
_UNSUPPORTED = {
    "multi_latent_attention": "multi-latent attention",
    "mtp_num_layers": "multi-token prediction layers",
    "attention_output_gate": "gated attention output",
    "experimental_attention_variant": "experimental attention variants",
    "heterogeneous_block_specs": "heterogeneous layers",
    "moe_latent_size": "latent MoE projections",
}


def _norm(config: Any, size: int) -> int:
    """LayerNorm has a weight and a bias; RMSNorm a weight only."""
    return size * (2 if config.normalization == "LayerNorm" else 1)


def _mlp(config: Any, ffn: int, bias: bool) -> int:
    """fc1 (doubled for a gated linear unit: gate and up projections) and fc2."""
    hidden = config.hidden_size
    up = ffn * (2 if config.gated_linear_unit else 1)
    return hidden * up + ffn * hidden + ((up + hidden) if bias else 0)


def _attention(config: Any) -> int:
    """QKV projection (grouped-query: fewer K/V heads), output projection, optional QK norms."""
    heads = config.num_attention_heads
    groups = config.num_query_groups or heads
    head_dim = config.kv_channels or config.hidden_size // heads
    q, kv = heads * head_dim, groups * head_dim
    hidden = config.hidden_size
    qkv_out = q + 2 * kv
    count = hidden * qkv_out + q * hidden
    if config.add_bias_linear or getattr(config, "add_qkv_bias", False):
        count += qkv_out
    if config.add_bias_linear:
        count += hidden
    if getattr(config, "qk_layernorm", False):
        count += 2 * _norm(config, head_dim)
    return count


def _moe(config: Any, active_only: bool) -> int:
    """Router, the routed experts (top-k of them when `active_only`), shared experts."""
    experts = config.num_moe_experts
    hidden = config.hidden_size
    ffn = config.moe_ffn_hidden_size or config.ffn_hidden_size
    used = config.moe_router_topk if active_only else experts
    count = experts * hidden + (experts if config.add_bias_linear else 0)
    count += used * _mlp(config, ffn, config.add_bias_linear)
    shared = getattr(config, "moe_shared_expert_intermediate_size", None)
    if shared:
        count += _mlp(config, shared, bias=False)  # megatron refuses biases there
        if getattr(config, "moe_shared_expert_gate", False):
            count += hidden
    return count


def _vocab(config: Any, vocab_size: int | None, pad_vocab: bool) -> int:
    vocab = vocab_size or getattr(config, "vocab_size", None)
    if not vocab:
        raise ValueError(
            f"{type(config).__name__} has no vocab_size (it comes from the tokenizer at run "
            "time): pass count_parameters(config, vocab_size=N).")
    return config.padded_vocab_size(vocab) if pad_vocab else vocab


def _check_supported(config: Any) -> None:
    for name, what in _UNSUPPORTED.items():
        if getattr(config, name, None):
            raise NotImplementedError(f"count_parameters does not model {what} ({name}).")
    freq = getattr(config, "moe_layer_freq", 1)
    if config.num_moe_experts and freq != 1:
        raise NotImplementedError(
            f"moe_layer_freq={freq!r}: nemo_lite's layer specs make every layer an MoE layer.")


def parameter_breakdown(config: Any, vocab_size: int | None = None, *, pad_vocab: bool = False,
                        active_only: bool = False) -> dict[str, int]:
    """Parameters per part of the model: embedding, position_embedding, attention, mlp,
    norms and output_layer (0 when tied to the embedding). See `count_parameters`."""
    _check_supported(config)
    vocab = _vocab(config, vocab_size, pad_vocab)
    hidden, layers = config.hidden_size, config.num_layers
    if config.num_moe_experts:
        mlp = _moe(config, active_only)
    else:
        mlp = _mlp(config, config.ffn_hidden_size, config.add_bias_linear)
    learned = config.position_embedding_type == "learned_absolute"
    return {
        "embedding": vocab * hidden,
        "position_embedding": config.seq_length * hidden if learned else 0,
        "attention": layers * _attention(config),
        "mlp": layers * mlp,
        # per layer: before attention and before the MLP; plus the final norm
        "norms": (2 * layers + 1) * _norm(config, hidden),
        "output_layer": 0 if config.share_embeddings_and_output_weights else vocab * hidden,
    }


def count_parameters(config: Any, vocab_size: int | None = None, *, pad_vocab: bool = False,
                     active_only: bool = False) -> int:
    """Total parameters of the model `config` describes (a GPTConfig-family config).

    vocab_size: the vocabulary to count (default `config.vocab_size`), unpadded unless
    `pad_vocab=True`. active_only: for MoE, count the `moe_router_topk` experts a token
    passes through instead of all of them (Mixtral 8x7B: 12.9e9 of 46.7e9).
    """
    parts = parameter_breakdown(config, vocab_size, pad_vocab=pad_vocab, active_only=active_only)
    return sum(parts.values())
