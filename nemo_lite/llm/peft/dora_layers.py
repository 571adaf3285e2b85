"""DoRA layers: LoRA's tensor-parallel adapter plus a per-output-row magnitude.

    out = (m / ||W + s B A||) * (base(x) + s B(A(x))) + bias,   m = ||W|| + magnitude_delta

The magnitude is kept as a delta on the frozen base row norms (zero at the start): the base
weights of a fine-tuning run are read from their checkpoint after the adapters are built, so
an absolute m could not be set at build time, and the delta makes the adapted model equal the
base one whatever the restore order; `m` itself (PEFT's `lora_magnitude_vector`) is
`||W|| + delta`. Tensor parallelism:

    column-parallel base (rows split): W, B and m are split alike; A is all-gathered (small)
        and each rank's row norms are local
    row-parallel base (columns split): m is whole on every rank; B is all-gathered and the
        squared row norms are summed over the TP group; with sequence parallelism the output
        is split along the sequence, so m's gradient is reduced over TP like a norm weight's

The norms are computed without gradient (DoRA's and PEFT's choice). An expert's adapter uses
the expert-TP group (size 1: see `LoRA`), and its magnitude joins the experts' gradient buffers.
"""

from __future__ import annotations

from typing import Any

import torch
from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

from nemo_lite.llm.peft.lora_layers import LoRAAdapter, LoRALinear, gather_tp

MAGNITUDE = "magnitude_delta"
_PARALLEL_ATTRIBUTES = ("tensor_model_parallel", "partition_dim", "partition_stride")


class DoRAAdapter(LoRAAdapter):
    """LoRA's adapter with `magnitude_delta` ([out / tp] beside a column-parallel base,
    [out] beside a row-parallel one)."""

    def __init__(self, mode: str, in_features: int, out_features: int, *args: Any,
                 **kwargs: Any) -> None:
        super().__init__(mode, in_features, out_features, *args, **kwargs)
        rows = self.linear_out.weight.shape[0] if mode == "column" else out_features
        delta = torch.nn.Parameter(torch.zeros(rows, dtype=self.linear_out.weight.dtype))
        template = self.linear_out.weight if mode == "column" else None
        for name in _PARALLEL_ATTRIBUTES:
            if template is not None and hasattr(template, name):
                setattr(delta, name, getattr(template, name))
        delta.allreduce = getattr(self.linear_in.weight, "allreduce", True)  # expert buffers
        if mode == "row" and self.sequence_parallel:
            delta.sequence_parallel = True
        self.register_parameter(MAGNITUDE, delta)

    @torch.no_grad()
    def row_norms(self, weight: torch.Tensor, with_adapter: bool) -> torch.Tensor:
        """This rank's rows of ||W (+ s B A)||, in float32."""
        group = self.linear_in.tp_group
        full = weight.float()
        if with_adapter:
            a = self.linear_in.weight.float()
            b = self.linear_out.weight.float()
            if self.mode == "column":
                a = gather_tp(a, 0, group)
            else:
                b = gather_tp(b, 0, group)
            full = full + self.scale * (b @ a)
        squares = (full * full).sum(dim=1)
        if self.mode == "row" and group.size() > 1:
            torch.distributed.all_reduce(squares, group=group)
        return squares.sqrt()

    def output_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """m / ||W + s B A|| per output row (this rank's rows); differentiable in m only."""
        magnitude = self.row_norms(weight, with_adapter=False) + getattr(self, MAGNITUDE).float()
        return magnitude / self.row_norms(weight, with_adapter=True)

    def magnitude(self, weight: torch.Tensor) -> torch.Tensor:
        """m = ||W|| + delta: PEFT's `lora_magnitude_vector` (this rank's rows)."""
        return (self.row_norms(weight, with_adapter=False)
                + getattr(self, MAGNITUDE).detach().float())

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: dict | None = None) -> dict[str, Any]:
        state = super().sharded_state_dict(prefix, sharded_offsets, metadata)
        groups = {}
        if metadata and metadata.get("dp_cp_group") is not None:
            groups = {"tp_group": self.linear_in.tp_group, "dp_cp_group": metadata["dp_cp_group"]}
        axis = {MAGNITUDE: 0} if self.mode == "column" else {}
        sharded = make_sharded_tensors_for_checkpoint(
            {MAGNITUDE: getattr(self, MAGNITUDE)}, prefix, axis, sharded_offsets, **groups)
        if self.glu_output:  # rows follow the base's [gate; up] per-rank layout
            from megatron.core.transformer.mlp import apply_swiglu_sharded_factory

            key = f"{prefix}{MAGNITUDE}"
            singleton = (metadata or {}).get("singleton_local_shards", False)
            sharded[key] = apply_swiglu_sharded_factory(sharded[key], sharded_offsets, singleton)
        state.update(sharded)
        return state


class DoRALinear(LoRALinear):
    """`to_wrap` with DoRA: the base output and the adapter's, scaled per row, plus the bias."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        out, bias, adapter_input = self.base_forward(x, *args, **kwargs)
        inner_bias = self._bias_in_output(bias)
        if inner_bias is not None:
            out = out - inner_bias
        scale = self.adapter.output_scale(self.to_wrap.weight).to(out.dtype)
        out = scale * (out + self.adapter(adapter_input).to(out.dtype))
        if inner_bias is not None:
            out = out + inner_bias
        return out, bias

    def _bias_in_output(self, returned_bias: Any) -> torch.Tensor | None:
        """The base's bias when it is already added into its output (not returned apart)."""
        bias = getattr(self.to_wrap, "bias", None)
        if returned_bias is not None or not isinstance(bias, torch.Tensor) or not bias.numel():
            return None
        return bias

    @torch.no_grad()
    def merged(self) -> torch.nn.Module:
        """The base linear with W = m * (W + s B A) / ||W + s B A|| (this rank's rows)."""
        scale = self.adapter.output_scale(self.to_wrap.weight)
        linear = super().merged()
        weight = linear.weight
        weight.copy_((weight.float() * scale.unsqueeze(1)).to(weight.dtype))
        return linear
