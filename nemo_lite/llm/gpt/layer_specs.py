"""Which transformer layer implementation a GPT model uses.

transformer-engine's spec when it is installed and the run is on a GPU; megatron's local spec
otherwise, with two substitutions the local spec lacks on CPU: a norm that supports
sequence parallelism, and a core attention that supports context parallelism.
fp8 and TE userbuffers (tp_comm_overlap) exist only in TE's layers: `require_transformer_engine`
gives their one clear error when the run cannot have them.
"""

from __future__ import annotations

from typing import Any

import torch

from nemo_lite.lightning.device import (  # noqa: F401 - re-exported for the layer's users
    require_transformer_engine,
    transformer_engine_available,
    transformer_engine_installed,
)


class SequenceParallelNorm:
    """torch LayerNorm / RMSNorm whose weights megatron all-reduces over TP under SP.

    Megatron's `WrappedTorchNorm` refuses sequence parallelism because nothing marks its
    parameters; `finalize_model_grads` sums the grads of parameters flagged `sequence_parallel`
    across the tensor-parallel group, which is what SP needs (each rank saw part of the sequence).
    """

    def __new__(cls, config: Any, hidden_size: int, eps: float = 1e-5, **_: Any) -> torch.nn.Module:
        if config.normalization == "RMSNorm":
            norm: torch.nn.Module = torch.nn.RMSNorm(hidden_size, eps=eps)
        elif config.normalization == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        else:
            raise ValueError(f"normalization={config.normalization!r}: use LayerNorm or RMSNorm.")
        for param in norm.parameters():
            param.sequence_parallel = bool(config.sequence_parallel)
        return norm


def local_layer_spec(config: Any, vp_stage: int | None = None):
    """Megatron's local spec, made to support SP (norm) and CP (core attention).

    Returned as block submodules so the block's final norm is the SP-aware one too.
    """
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_block import (
        TransformerBlockSubmodules,
        get_num_layers_to_build,
    )

    from nemo_lite.llm.gpt.cp_attention import ContextParallelDotProductAttention

    spec = get_gpt_layer_local_spec(
        num_experts=config.num_moe_experts,
        moe_grouped_gemm=False,
        qk_layernorm=config.qk_layernorm,
        normalization=config.normalization,
    )
    sub = spec.submodules
    sub.input_layernorm = SequenceParallelNorm
    sub.pre_mlp_layernorm = SequenceParallelNorm
    attention = sub.self_attention.submodules
    attention.core_attention = ContextParallelDotProductAttention
    if config.qk_layernorm:
        attention.q_layernorm = SequenceParallelNorm
        attention.k_layernorm = SequenceParallelNorm
    layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return TransformerBlockSubmodules(layer_specs=[spec] * layers, layer_norm=SequenceParallelNorm)


def transformer_engine_layer_spec(config: Any, vp_stage: int | None = None):
    """megatron-core 0.16.1's TE layer: fused norm+linear, TE attention (CP, fp8), experts.

    Its `fp8` argument is deprecated there (fp8 is read from the config at run time) and is
    not passed; TE normalises with `config.normalization` itself, so no norm is substituted.
    """
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_with_transformer_engine_spec,
    )

    return get_gpt_layer_with_transformer_engine_spec(
        num_experts=config.num_moe_experts,
        moe_grouped_gemm=config.moe_grouped_gemm,
        qk_layernorm=config.qk_layernorm,
        multi_latent_attention=config.multi_latent_attention,
        moe_use_legacy_grouped_gemm=config.moe_use_legacy_grouped_gemm,
        qk_l2_norm=config.qk_l2_norm,
    )


def default_layer_spec(config: Any, vp_stage: int | None = None):
    """TE's spec on a GPU with TE; the local spec otherwise (fp8 then refused, clearly)."""
    if transformer_engine_available():
        return transformer_engine_layer_spec(config, vp_stage)
    if getattr(config, "fp8", None):
        require_transformer_engine(f"fp8={config.fp8!r}")
    return local_layer_spec(config, vp_stage)
