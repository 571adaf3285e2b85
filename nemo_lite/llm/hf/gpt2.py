"""GPT-2 (Hugging Face's GPT2LMHeadModel): learned positions, LayerNorm, biases, GELU, tied output.

GPT-2 stores its linears as Conv1D, [in, out]; megatron's are [out, in], so every matrix is
transposed. `c_attn` holds [q | k | v] over all heads; megatron's fused QKV is grouped per head
(multi-head attention: one query group per head).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nemo_lite.llm.hf.rules import Rule, qkv_merge, qkv_split, transpose_merge, transpose_split

ARCHITECTURES = ("GPT2LMHeadModel",)
CONV1D = True  # linears stored [in, out] (PEFT: fan_in_fan_out)
LAYER = "transformer.h.{i}."
ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "erf"}


class UnsupportedConfigError(ValueError):
    """A Hugging Face config value this converter cannot represent exactly."""


def _c_attn_merge(tensors: Sequence[torch.Tensor], config: Any) -> torch.Tensor:
    fused = tensors[0]
    fused = fused.t() if fused.dim() == 2 else fused  # weight [in, 3h] -> [3h, in]; bias [3h]
    return qkv_merge(fused.chunk(3, dim=0), config)


def _c_attn_split(fused: torch.Tensor, config: Any) -> tuple[torch.Tensor, ...]:
    qkv = torch.cat(qkv_split(fused, config), dim=0)
    return ((qkv.t() if qkv.dim() == 2 else qkv).contiguous(),)


def rules(config: Any) -> list[Rule]:
    out = [
        Rule("embedding.word_embeddings.weight", ("transformer.wte.weight",)),
        Rule("embedding.position_embeddings.weight", ("transformer.wpe.weight",)),
        Rule("decoder.final_layernorm.weight", ("transformer.ln_f.weight",)),
        Rule("decoder.final_layernorm.bias", ("transformer.ln_f.bias",)),
    ]
    for ours, theirs in (("input_layernorm", "ln_1"), ("pre_mlp_layernorm", "ln_2")):
        out += [Rule(f"decoder.layers.{{i}}.{ours}.{p}", (f"{LAYER}{theirs}.{p}",))
                for p in ("weight", "bias")]
    for p in ("weight", "bias"):
        out.append(Rule(f"decoder.layers.{{i}}.self_attention.linear_qkv.{p}",
                        (f"{LAYER}attn.c_attn.{p}",), _c_attn_merge, _c_attn_split))
    for ours, theirs in (("self_attention.linear_proj", "attn.c_proj"),
                         ("mlp.linear_fc1", "mlp.c_fc"), ("mlp.linear_fc2", "mlp.c_proj")):
        out += [Rule(f"decoder.layers.{{i}}.{ours}.weight", (f"{LAYER}{theirs}.weight",),
                     transpose_merge, transpose_split),
                Rule(f"decoder.layers.{{i}}.{ours}.bias", (f"{LAYER}{theirs}.bias",))]
    if not config.share_embeddings_and_output_weights:
        out.append(Rule("output_layer.weight", ("lm_head.weight",)))
    return out


def config_from_hf(hf: dict[str, Any], dtype: Any, seq_length: int | None = None) -> Any:
    """`llm.GPTConfig` with GPT-2's shape; its positions fix the sequence length."""
    from nemo_lite import llm
    from nemo_lite.llm.gpt.activations import gelu_tanh

    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise UnsupportedConfigError(f"activation_function={act!r}: supported are "
                                     f"{', '.join(ACTIVATIONS)}.")
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if hf.get(flag):
            raise UnsupportedConfigError(f"{flag}=true: not supported for GPT-2.")
    if hf.get("scale_attn_weights") is False:
        raise UnsupportedConfigError("scale_attn_weights=false: megatron always scales "
                                     "attention scores by 1/sqrt(head dim).")
    hidden = hf["n_embd"]
    return llm.GPTConfig(
        num_layers=hf["n_layer"],
        hidden_size=hidden,
        ffn_hidden_size=hf.get("n_inner") or 4 * hidden,
        num_attention_heads=hf["n_head"],
        layernorm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        vocab_size=hf["vocab_size"],
        seq_length=hf["n_positions"],  # the learned position table has exactly these rows
        activation_func=gelu_tanh if ACTIVATIONS[act] == "tanh" else
        torch.nn.functional.gelu,
        share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", True)),
        position_embedding_type="learned_absolute",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        params_dtype=dtype,
    )


def config_to_hf(config: Any, architecture: str, dtype_name: str) -> dict[str, Any]:
    from nemo_lite.llm.gpt.activations import gelu_tanh

    hf: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": "gpt2",
        "n_embd": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_attention_heads,
        "n_inner": config.ffn_hidden_size,
        "n_positions": config.seq_length,
        "vocab_size": config.vocab_size,
        "layer_norm_epsilon": config.layernorm_epsilon,
        "activation_function": "gelu_new" if config.activation_func is gelu_tanh else "gelu",
        "tie_word_embeddings": bool(config.share_embeddings_and_output_weights),
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "torch_dtype": dtype_name,
    }
    if config.vocab_size <= 50256:  # GPT-2's default bos/eos id is outside a smaller vocabulary
        hf.update(bos_token_id=None, eos_token_id=None)
    return hf


def check_exportable(config: Any) -> None:
    """Export only what GPT2LMHeadModel computes: LayerNorm, learned positions, biases, GELU."""
    from nemo_lite.llm.gpt.activations import gelu_tanh

    problems = []
    if config.normalization != "LayerNorm":
        problems.append(f"normalization={config.normalization}")
    if config.position_embedding_type != "learned_absolute":
        problems.append(f"position_embedding_type={config.position_embedding_type}")
    if not config.add_bias_linear or config.gated_linear_unit:
        problems.append("linears without bias or gated MLP")
    if config.activation_func not in (gelu_tanh, torch.nn.functional.gelu):
        problems.append(f"activation {getattr(config.activation_func, '__name__', '?')}")
    if config.num_query_groups not in (None, config.num_attention_heads):
        problems.append("grouped-query attention")
    if problems:
        raise UnsupportedConfigError(f"this GPTConfig is not GPT-2 ({', '.join(problems)}): "
                                     "it has no Hugging Face counterpart here.")
