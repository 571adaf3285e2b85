"""Mixtral (Hugging Face's MixtralForCausalLM): Llama-style attention, a sparse MoE MLP.

Each layer's router (`block_sparse_moe.gate`) and experts (`experts.{e}.w1 / w3 / w2`, SwiGLU's
gate / up / down) become megatron's `mlp.router` and `mlp.experts.local_experts.{e}` (fc1 is
[gate; up], as for dense Llama). Hugging Face takes the softmax over all experts, keeps the
top k and renormalises them: megatron's softmax over the top-k logits
(`moe_router_pre_softmax=False`), the same probabilities. The checkpoint holds every expert;
at EP > 1 dist_checkpointing gives each rank its own.
"""

from __future__ import annotations

from typing import Any

from nemo_lite.llm.hf import llama
from nemo_lite.llm.hf.rules import Rule, gate_up_merge, gate_up_split

ARCHITECTURES = ("MixtralForCausalLM",)
MOE = llama.LAYER + "block_sparse_moe."
EXPERT = "decoder.layers.{i}.mlp.experts.local_experts.{e}."
UnsupportedConfigError = llama.UnsupportedConfigError


def rules(config: Any) -> list[Rule]:
    dense_mlp = ("decoder.layers.{i}.mlp.linear_fc1.weight",
                 "decoder.layers.{i}.mlp.linear_fc2.weight")
    out = [rule for rule in llama.rules(config) if rule.megatron not in dense_mlp]
    return out + [
        Rule("decoder.layers.{i}.mlp.router.weight", (MOE + "gate.weight",)),
        Rule(EXPERT + "linear_fc1.weight",
             (MOE + "experts.{e}.w1.weight", MOE + "experts.{e}.w3.weight"),
             gate_up_merge, gate_up_split),
        Rule(EXPERT + "linear_fc2.weight", (MOE + "experts.{e}.w2.weight",)),
    ]


def config_from_hf(hf: dict[str, Any], dtype: Any, seq_length: int | None = None) -> Any:
    """`llm.MixtralConfig` with the Hugging Face config's shape, routing and numerics."""
    from nemo_lite import llm

    return llm.MixtralConfig(
        **llama.config_arguments(hf, dtype, seq_length),
        num_moe_experts=hf["num_local_experts"],
        moe_router_topk=hf["num_experts_per_tok"],
        moe_ffn_hidden_size=hf["intermediate_size"],
        moe_router_pre_softmax=False,  # top-k, then softmax: Hugging Face's renormalised top-k
        moe_aux_loss_coeff=float(hf.get("router_aux_loss_coef", 1e-2)),
    )


def config_to_hf(config: Any, architecture: str, dtype_name: str) -> dict[str, Any]:
    hf = llama.config_to_hf(config, "MistralForCausalLM", dtype_name)
    hf.update(architectures=[architecture], model_type="mixtral",
              num_local_experts=config.num_moe_experts,
              num_experts_per_tok=config.moe_router_topk,
              intermediate_size=config.moe_ffn_hidden_size or config.ffn_hidden_size,
              router_aux_loss_coef=config.moe_aux_loss_coeff, output_router_logits=False)
    return hf


def check_exportable(config: Any) -> None:
    if config.moe_router_pre_softmax:
        raise UnsupportedConfigError(
            "moe_router_pre_softmax=True (softmax over all experts, top-k not renormalised) is "
            "not what MixtralForCausalLM computes: export supports moe_router_pre_softmax=False.")
    if getattr(config, "moe_shared_expert_intermediate_size", None):
        raise UnsupportedConfigError("shared experts: MixtralForCausalLM has none.")
