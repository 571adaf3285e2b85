"""Builds real megatron GPT models on CPU and prints their parameter counts next to
`count_parameters` (padded vocabulary: what megatron allocates), one JSON line per config.

Run as its own process (tests/recipes/test_param_count.py does): it initialises
torch.distributed and megatron's global parallel state.
"""

from __future__ import annotations

import json
import socket
import sys

import torch

from nemo_lite import llm

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0)


def configs() -> dict:
    return {
        # learned positions, LayerNorm (weight + bias), biases, GELU, tied output; vocab 300 -> 384
        "gpt_bias_layernorm_tied": llm.GPTConfig(
            num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32, vocab_size=300,
            **NO_DROPOUT),
        # the same with an untied output layer, RoPE and a non-default head size
        "gpt_untied_rope_kv_channels": llm.GPTConfig(
            num_layers=2, hidden_size=64, num_attention_heads=4, kv_channels=24, seq_length=32,
            vocab_size=256, share_embeddings_and_output_weights=False,
            position_embedding_type="rope", ffn_hidden_size=80, **NO_DROPOUT),
        # Llama: GQA (8 heads, 2 KV groups), SwiGLU, RMSNorm, no biases, untied
        "llama_gqa_rmsnorm_untied": llm.LlamaConfig(
            num_layers=3, hidden_size=64, num_attention_heads=8, num_query_groups=2,
            ffn_hidden_size=96, seq_length=32, vocab_size=500),
        # Llama variant: QK LayerNorm and QKV bias (Qwen-style)
        "llama_qk_norm_qkv_bias": llm.LlamaConfig(
            num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
            ffn_hidden_size=96, seq_length=32, vocab_size=256, qk_layernorm=True,
            add_qkv_bias=True),
        # MoE: 4 SwiGLU experts, top-2 router, GQA
        "mixtral_moe": llm.MixtralConfig(
            num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
            ffn_hidden_size=48, num_moe_experts=4, seq_length=32, vocab_size=256,
            moe_aux_loss_coeff=0.0),
        # MoE with biases (router bias too), LayerNorm, non-gated experts, a gated shared expert
        "moe_bias_shared_expert": llm.GPTConfig(
            num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=32,
            num_moe_experts=4, moe_router_topk=2, moe_ffn_hidden_size=40, seq_length=32,
            vocab_size=256, moe_aux_loss_coeff=0.0, add_bias_linear=False,
            moe_shared_expert_intermediate_size=48, moe_shared_expert_gate=True, **NO_DROPOUT),
        "moe_router_bias": llm.GPTConfig(
            num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=32,
            num_moe_experts=2, moe_router_topk=1, moe_router_pre_softmax=True, seq_length=32,
            vocab_size=256,
            moe_aux_loss_coeff=0.0, **NO_DROPOUT),
    }


def init_single_rank() -> None:
    from megatron.core import parallel_state, tensor_parallel

    from nemo_lite.lightning import _cpu

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    parallel_state.initialize_model_parallel(1, 1)
    _cpu.apply()
    tensor_parallel.model_parallel_cuda_manual_seed(1234)


def main() -> None:
    init_single_rank()
    names = sys.argv[1:] or list(configs())
    built = configs()
    for name in names:
        config = built[name]
        model = config.configure_model()
        print(json.dumps({
            "name": name,
            "megatron": sum(p.numel() for p in model.parameters()),
            "counted": llm.count_parameters(config, pad_vocab=True),
        }), flush=True)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
