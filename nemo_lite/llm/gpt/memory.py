"""Per-rank memory of a GPT-family run, estimated from shapes before anything is launched.

An estimate for planning (does this layout fit?), not a measurement: it counts the bytes
megatron allocates per parameter on the most loaded rank (the first pipeline stage, which also
holds the embedding) and the activations 1F1B keeps in flight there, from the formulas of
Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models" (2022),
with the config's activation recompute: selective (core_attn) drops the attention scores; full
keeps each recomputed layer's input only, plus one recompute unit's activations during its
backward pass. Framework buffers, fragmentation and the CUDA context are not included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nemo_lite.llm.gpt.params import parameter_breakdown

GiB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    parameters_per_rank: int
    weights: float  # bytes, on the most loaded rank
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def lines(self) -> list[str]:
        def gib(x: float) -> str:
            return f"{x / GiB:8.2f} GiB" if x >= GiB / 10 else f"{x / 1024**2:8.2f} MiB"

        count = self.parameters_per_rank
        shown = f"{count / 1e9:.3f} B" if count >= 1e8 else f"{count / 1e6:.3f} M"
        return [
            f"parameters on the most loaded rank: {shown}",
            f"  weights      {gib(self.weights)}",
            f"  gradients    {gib(self.gradients)}",
            f"  optimizer    {gib(self.optimizer)}",
            f"  activations  {gib(self.activations)}",
            f"  total        {gib(self.total)}  (estimate; excludes framework buffers)",
        ]


def estimate_memory(
    config: Any,
    *,
    tp: int = 1,
    pp: int = 1,
    cp: int = 1,
    ep: int = 1,
    etp: int | None = None,
    dp: int = 1,
    vpp: int | None = None,
    sequence_parallel: bool = False,
    precision: str = "bf16-mixed",
    distributed_optimizer: bool = False,
    micro_batch_size: int = 1,
    seq_length: int | None = None,
    num_microbatches: int = 1,
    vocab_size: int | None = None,
    flash_attention: bool = True,
    grad_reduce_in_fp32: bool = True,
    adapter_parameters: int | None = None,
) -> MemoryEstimate:
    """Bytes per rank for weights, gradients, Adam state and activations (see module doc).

    flash_attention: transformer-engine's fused attention (GPU runs) keeps no attention-score
    matrix; megatron's local attention (CPU runs) does. adapter_parameters: a LoRA / DoRA run's
    adapters on this rank (`adapter_parameters_per_rank`): the base is frozen, so only the
    adapters have gradients and optimizer state.
    """
    etp = etp or tp
    parts = parameter_breakdown(config, vocab_size)
    router = config.num_layers * config.hidden_size * (config.num_moe_experts or 0)
    experts = parts["mlp"] - router if config.num_moe_experts else 0
    layer_params = parts["attention"] + parts["mlp"] + parts["norms"] - experts
    stage_layers = math.ceil(config.num_layers / pp)
    dense = (layer_params * stage_layers / config.num_layers
             + parts["embedding"] + parts["position_embedding"]
             + (parts["output_layer"] if pp == 1 else 0)) / tp
    expert = experts * stage_layers / config.num_layers / (ep * etp)
    params = int(dense + expert)

    half = precision != "32"
    weight_bytes = 2 if half else 4
    grad_bytes = 4 if (grad_reduce_in_fp32 or not half) else 2  # megatron's main-grad buffer
    # Adam: fp32 main params (mixed precision only) + exp_avg + exp_avg_sq
    optim_bytes = (4 if half else 0) + 8
    if distributed_optimizer:
        optim_bytes /= dp

    seq = (seq_length or config.seq_length) / cp
    h, a = config.hidden_size, config.num_attention_heads
    act_bytes = 2 if half else 4
    # 34 sbh: what a layer stores besides the attention scores (split by TP only under
    # sequence parallelism; the paper's bytes are for 16-bit activations); the scores, a s^2 b /
    # t values: the softmax output, and with attention dropout its mask (1 byte) and output.
    # Flash attention stores none; selective recompute (megatron's default module, core_attn)
    # recomputes them, one layer's at a time in the backward pass.
    recompute = getattr(config, "recompute_granularity", None)
    selective = recompute == "selective" and "core_attn" in (
        getattr(config, "recompute_modules", None) or ["core_attn"])
    split = tp if sequence_parallel else 1
    base = seq * micro_batch_size * h * 34 / split * act_bytes / 2
    score_bytes = act_bytes + (1 + act_bytes if getattr(config, "attention_dropout", 0) else 0)
    scores = 0 if flash_attention else a * seq * seq * micro_batch_size / tp * score_bytes
    per_layer = base + scores
    in_flight = min(pp, num_microbatches)  # 1F1B: the first stage holds up to PP micro-batches
    if vpp:
        in_flight = min(num_microbatches, pp + (pp - 1) / vpp)  # interleaved schedule's extra warm-up
    # peak = what the forward passes keep, plus what the backward pass recomputes at its peak
    if recompute == "full":  # a recomputed layer keeps only its input (sbh values)
        layer_input = seq * micro_batch_size * h / split * act_bytes
        n = min(getattr(config, "recompute_num_layers", None) or 1, stage_layers)
        if getattr(config, "recompute_method", None) == "uniform":  # every layer, n per unit
            stored = math.ceil(stage_layers / n) * layer_input * in_flight
            activations = stored + n * per_layer
        else:  # block: the first n layers of the stage, recomputed after the others are freed
            stored = (n * layer_input + (stage_layers - n) * per_layer) * in_flight
            activations = max(stored, stored - (stage_layers - n) * per_layer + n * per_layer)
    elif selective:
        activations = base * stage_layers * in_flight + scores
    else:
        activations = per_layer * stage_layers * in_flight
    trained = params if adapter_parameters is None else adapter_parameters
    params += adapter_parameters or 0
    return MemoryEstimate(params, params * weight_bytes, trained * grad_bytes,
                          trained * optim_bytes, activations)


def adapter_parameters_per_rank(config: Any, dim: int, targets: list[str], magnitude: bool = False,
                                *, tp: int = 1, pp: int = 1, ep: int = 1) -> int:
    """LoRA / DoRA parameters on the most loaded rank: `dim * (in + out)` per adapted linear
    (+ `out` for DoRA's magnitude), split over TP, an expert's over EP; `targets` are module
    names (linear_qkv, linear_proj, linear_fc1, linear_fc2)."""
    h, heads = config.hidden_size, config.num_attention_heads
    kv = config.kv_channels or h // heads
    groups = config.num_query_groups or heads
    experts = config.num_moe_experts or 0
    ffn = (getattr(config, "moe_ffn_hidden_size", None) or config.ffn_hidden_size) if experts \
        else config.ffn_hidden_size
    glu = 2 if getattr(config, "gated_linear_unit", False) else 1
    attention = {"linear_qkv": (h, (heads + 2 * groups) * kv), "linear_proj": (heads * kv, h)}
    mlp = {"linear_fc1": (h, ffn * glu), "linear_fc2": (ffn, h)}

    def count(shapes: dict[str, tuple[int, int]]) -> int:
        return sum(dim * (i + o) + (o if magnitude else 0)
                   for name, (i, o) in shapes.items() if name in targets)

    per_layer = count(attention) / tp + (count(mlp) * experts / ep if experts
                                         else count(mlp) / tp)
    return int(per_layer * math.ceil(config.num_layers / pp))
