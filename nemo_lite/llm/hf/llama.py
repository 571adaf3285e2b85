"""Llama-style decoders: Llama 2 / 3 / 3.1 / 3.2, Mistral, Qwen2 / 2.5 (QKV bias), Qwen3 (QK norm).

Hugging Face's LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM share
one layout: RMSNorm, RoPE (rotate-half), grouped-query attention, SwiGLU, optionally tied
embeddings. They become `llm.LlamaConfig` with megatron's local layers: the fused QKV is
grouped per query group, fc1 is [gate; up].
"""

from __future__ import annotations

from typing import Any

from nemo_lite.llm.hf.rules import Rule, gate_up_merge, gate_up_split, qkv_merge, qkv_split

ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                 "Qwen3ForCausalLM")
LAYER = "model.layers.{i}."
# Llama 3.1's rope scaling as megatron implements it (low / high frequency factors, old context)
MEGATRON_ROPE_SCALING = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192}


class UnsupportedConfigError(ValueError):
    """A Hugging Face config value this converter cannot represent exactly."""


def rules(config: Any) -> list[Rule]:
    """The mapping for a model built from `config` (biases / QK norm / output as it has them)."""
    out = [
        Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",)),
        Rule("decoder.layers.{i}.input_layernorm.weight", (LAYER + "input_layernorm.weight",)),
        Rule("decoder.layers.{i}.self_attention.linear_qkv.weight",
             tuple(LAYER + f"self_attn.{p}_proj.weight" for p in "qkv"), qkv_merge, qkv_split),
        Rule("decoder.layers.{i}.self_attention.linear_proj.weight",
             (LAYER + "self_attn.o_proj.weight",)),
        Rule("decoder.layers.{i}.pre_mlp_layernorm.weight",
             (LAYER + "post_attention_layernorm.weight",)),
        Rule("decoder.layers.{i}.mlp.linear_fc1.weight",
             (LAYER + "mlp.gate_proj.weight", LAYER + "mlp.up_proj.weight"),
             gate_up_merge, gate_up_split),
        Rule("decoder.layers.{i}.mlp.linear_fc2.weight", (LAYER + "mlp.down_proj.weight",)),
        Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
    ]
    if config.add_qkv_bias:
        out.append(Rule("decoder.layers.{i}.self_attention.linear_qkv.bias",
                        tuple(LAYER + f"self_attn.{p}_proj.bias" for p in "qkv"),
                        qkv_merge, qkv_split))
    if config.qk_layernorm:
        out += [Rule("decoder.layers.{i}.self_attention.q_layernorm.weight",
                     (LAYER + "self_attn.q_norm.weight",)),
                Rule("decoder.layers.{i}.self_attention.k_layernorm.weight",
                     (LAYER + "self_attn.k_norm.weight",))]
    if not config.share_embeddings_and_output_weights:
        out.append(Rule("output_layer.weight", ("lm_head.weight",)))
    return out


def config_from_hf(hf: dict[str, Any], dtype: Any, seq_length: int | None = None) -> Any:
    """`llm.LlamaConfig` with the Hugging Face config's shape and numerics."""
    from nemo_lite import llm

    return llm.LlamaConfig(**config_arguments(hf, dtype, seq_length))


def config_arguments(hf: dict[str, Any], dtype: Any, seq_length: int | None) -> dict[str, Any]:
    """The LlamaConfig arguments of a Llama-style Hugging Face config (checked first)."""
    architecture = hf["architectures"][0]
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedConfigError(f"hidden_act={hf['hidden_act']!r}: only silu (SwiGLU) is "
                                     "supported for Llama-style models.")
    if hf.get("mlp_bias") or (hf.get("attention_bias") and architecture != "Qwen2ForCausalLM"):
        raise UnsupportedConfigError("attention_bias / mlp_bias on the output projections: not "
                                     "supported (Qwen2's QKV bias is).")
    if hf.get("sliding_window") and hf.get("use_sliding_window", True) and \
            architecture in ("MistralForCausalLM", "MixtralForCausalLM"):
        raise UnsupportedConfigError(
            f"sliding_window={hf['sliding_window']}: sliding-window attention is not supported; "
            "Mistral v0.2 and later have none (sliding_window null).")
    heads = hf["num_attention_heads"]
    # transformers 4 writes rope_theta + rope_scaling; 5 writes rope_parameters (both here)
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = hf.get("rope_theta") or rope.get("rope_theta") or 10000.0
    rope_type = rope.get("rope_type", rope.get("type"))
    scaling = {}
    if rope_type == "llama3":
        different = {k: rope.get(k) for k, v in MEGATRON_ROPE_SCALING.items()
                     if float(rope.get(k, v)) != v}
        if different:
            raise UnsupportedConfigError(
                f"rope_scaling {different}: megatron's llama3 rope scaling has "
                f"{MEGATRON_ROPE_SCALING}.")
        scaling = {"rope_scaling": True, "rope_scaling_factor": float(rope["factor"])}
    elif rope_type not in (None, "default"):
        raise UnsupportedConfigError(f"rope_scaling type {rope_type!r}: only Llama 3.1's "
                                     "'llama3' scaling is supported.")
    max_positions = hf.get("max_position_embeddings", 4096)
    return dict(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        ffn_hidden_size=hf["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=hf.get("num_key_value_heads") or heads,
        kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
        layernorm_epsilon=hf.get("rms_norm_eps", 1e-6),
        rotary_base=theta,
        vocab_size=hf["vocab_size"],
        seq_length=seq_length or min(max_positions, 4096),
        share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", False)),
        add_qkv_bias=architecture == "Qwen2ForCausalLM",
        qk_layernorm=architecture == "Qwen3ForCausalLM",
        params_dtype=dtype,
        **scaling,
    )


def config_to_hf(config: Any, architecture: str, dtype_name: str) -> dict[str, Any]:
    """The Hugging Face config.json of a Llama-style nemo_lite config."""
    model_type = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                  "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3"}[architecture]
    hf: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.ffn_hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_query_groups or config.num_attention_heads,
        "head_dim": config.kv_channels,
        "hidden_act": "silu",
        "rms_norm_eps": config.layernorm_epsilon,
        "rope_theta": float(config.rotary_base),
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.seq_length,
        "tie_word_embeddings": bool(config.share_embeddings_and_output_weights),
        "torch_dtype": dtype_name,
        "attention_dropout": 0.0,
    }
    if model_type == "llama":
        hf.update(attention_bias=False, mlp_bias=False)
    if model_type == "mistral":
        hf["sliding_window"] = None
    if model_type == "qwen2":
        hf.update(use_sliding_window=False, sliding_window=None)
    if config.rope_scaling:
        hf["rope_scaling"] = {"rope_type": "llama3", "factor": config.rope_scaling_factor,
                              **MEGATRON_ROPE_SCALING}
    return hf
