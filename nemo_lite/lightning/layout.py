"""Validation of a parallel layout against the world size and the model's shapes.

Pure Python (no torch import), so recipes and the CLI can check a layout before any
process is spawned, and the strategy can check it again before anything is built.
Every rule raises one `LayoutError` naming the numbers involved and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nemo_lite.lightning.batch_ramp import BatchRamp, RampError


class LayoutError(ValueError):
    """A parallel layout that cannot work; the message names the numbers and the fix."""


@dataclass(frozen=True)
class ParallelLayout:
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    virtual_pipeline_model_parallel_size: int | None = None
    context_parallel_size: int = 1
    sequence_parallel: bool = False
    expert_model_parallel_size: int = 1
    expert_tensor_parallel_size: int | None = None

    @property
    def ranks_per_replica(self) -> int:
        """TP x PP x CP: the ranks one data-parallel replica spans (megatron's
        model_parallel_size leaves CP out; this one counts it)."""
        return (
            self.tensor_model_parallel_size
            * self.pipeline_model_parallel_size
            * self.context_parallel_size
        )

    def data_parallel_size(self, world_size: int) -> int:
        return world_size // self.ranks_per_replica

    def validate_sizes(self) -> None:
        """Rules that need neither the world size nor the model."""
        for name in (
            "tensor_model_parallel_size",
            "pipeline_model_parallel_size",
            "context_parallel_size",
            "expert_model_parallel_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LayoutError(f"{name}={value!r}: must be an integer >= 1.")
        vpp = self.virtual_pipeline_model_parallel_size
        if vpp is not None:
            if not isinstance(vpp, int) or vpp < 1:
                raise LayoutError(
                    f"virtual_pipeline_model_parallel_size={vpp!r}: must be None or an integer >= 1."
                )
            if vpp > 1 and self.pipeline_model_parallel_size == 1:
                raise LayoutError(
                    f"virtual_pipeline_model_parallel_size={vpp} needs pipeline parallelism, but "
                    "pipeline_model_parallel_size=1: set pipeline_model_parallel_size >= 2 or "
                    "virtual_pipeline_model_parallel_size=None."
                )
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise LayoutError(
                "sequence_parallel=True needs tensor parallelism, but tensor_model_parallel_size=1: "
                "set tensor_model_parallel_size >= 2 or sequence_parallel=False."
            )
        etp = self.expert_tensor_parallel_size
        if etp is not None and (not isinstance(etp, int) or etp < 1):
            raise LayoutError(f"expert_tensor_parallel_size={etp!r}: must be None or an int >= 1.")

    def validate_world(self, world_size: int) -> None:
        """World size must hold whole model replicas; experts must fit the data-parallel ranks."""
        self.validate_sizes()
        tp, pp, cp = (
            self.tensor_model_parallel_size,
            self.pipeline_model_parallel_size,
            self.context_parallel_size,
        )
        mp = tp * pp * cp
        if world_size % mp != 0:
            raise LayoutError(
                f"world size {world_size} is not divisible by tensor ({tp}) x pipeline ({pp}) x "
                f"context ({cp}) parallel = {mp}: launch a multiple of {mp} ranks "
                f"(e.g. devices={mp}) or shrink the parallel sizes."
            )
        ep = self.expert_model_parallel_size
        etp = self.expert_tensor_parallel_size or tp
        expert_ranks = world_size // pp
        if ep > 1 and expert_ranks % (ep * etp) != 0:
            raise LayoutError(
                f"expert_model_parallel_size={ep} x expert_tensor_parallel_size={etp} does not "
                f"divide the {expert_ranks} ranks of a pipeline stage (world {world_size} / "
                f"pipeline {pp}): choose sizes whose product divides {expert_ranks}."
            )

    def validate_model(
        self,
        *,
        num_layers: int,
        num_attention_heads: int,
        num_query_groups: int | None = None,
        seq_length: int | None = None,
        num_moe_experts: int | None = None,
        ffn_hidden_size: int | None = None,
    ) -> None:
        """Model shapes must split evenly over the layout."""
        self.validate_sizes()
        tp, pp, cp = (
            self.tensor_model_parallel_size,
            self.pipeline_model_parallel_size,
            self.context_parallel_size,
        )
        if num_attention_heads % tp != 0:
            raise LayoutError(
                f"num_attention_heads={num_attention_heads} is not divisible by "
                f"tensor_model_parallel_size={tp}: pick a tensor parallel size that divides "
                f"{num_attention_heads}."
            )
        groups = num_query_groups or num_attention_heads
        if groups % tp != 0:
            raise LayoutError(
                f"num_query_groups={groups} is not divisible by tensor_model_parallel_size={tp}: "
                f"pick a tensor parallel size that divides {groups}."
            )
        if ffn_hidden_size is not None and ffn_hidden_size % tp != 0:
            raise LayoutError(
                f"ffn_hidden_size={ffn_hidden_size} is not divisible by "
                f"tensor_model_parallel_size={tp}."
            )
        vpp = self.virtual_pipeline_model_parallel_size or 1
        stages = pp * vpp
        if num_layers % stages != 0:
            what = f"pipeline ({pp})" + (f" x virtual pipeline ({vpp})" if vpp > 1 else "")
            raise LayoutError(
                f"num_layers={num_layers} is not divisible by {what} = {stages} stages: "
                f"use a number of layers that is a multiple of {stages} or fewer stages."
            )
        if seq_length is not None and cp > 1 and seq_length % (2 * cp) != 0:
            raise LayoutError(
                f"seq_length={seq_length} is not divisible by 2 x context_parallel_size = {2 * cp} "
                f"(context parallelism splits each sequence into {2 * cp} load-balanced chunks): "
                f"use a sequence length that is a multiple of {2 * cp}."
            )
        if seq_length is not None and self.sequence_parallel and seq_length // cp % tp != 0:
            raise LayoutError(
                f"sequence_parallel splits the sequence over tensor_model_parallel_size={tp}, but "
                f"the per-rank sequence length {seq_length // cp} is not divisible by {tp}."
            )
        ep = self.expert_model_parallel_size
        if ep > 1 and not num_moe_experts:
            raise LayoutError(
                f"expert_model_parallel_size={ep} but the model has no experts "
                "(num_moe_experts is None): set expert_model_parallel_size=1 or use an MoE model."
            )
        if num_moe_experts and num_moe_experts % ep != 0:
            raise LayoutError(
                f"num_moe_experts={num_moe_experts} is not divisible by "
                f"expert_model_parallel_size={ep}: pick an expert parallel size that divides "
                f"{num_moe_experts}."
            )
        etp = self.expert_tensor_parallel_size
        if num_moe_experts and ep == 1 and etp is not None and etp < tp:
            raise LayoutError(
                f"expert_tensor_parallel_size={etp} < tensor_model_parallel_size={tp} with "
                "expert_model_parallel_size=1: megatron would not sum the expert gradients over "
                "the tensor-parallel ranks (silently wrong). Use expert_model_parallel_size > 1 "
                "or leave expert_tensor_parallel_size=None (it then equals the TP size)."
            )
        if num_moe_experts and tp > 1 and not self.sequence_parallel:
            raise LayoutError(
                f"a mixture-of-experts model with tensor_model_parallel_size={tp} needs "
                "sequence_parallel=True (megatron-core requires it for MoE with TP>1)."
            )

    def validate_batch(
        self, *, world_size: int, global_batch_size: int, micro_batch_size: int
    ) -> int:
        """Return the number of micro-batches per step; the global batch must split evenly."""
        dp = self.data_parallel_size(world_size)
        if micro_batch_size < 1 or global_batch_size < 1:
            raise LayoutError(
                f"global_batch_size={global_batch_size} and micro_batch_size={micro_batch_size} "
                "must be >= 1."
            )
        if global_batch_size % (micro_batch_size * dp) != 0:
            raise LayoutError(
                f"global_batch_size={global_batch_size} is not divisible by micro_batch_size "
                f"({micro_batch_size}) x data parallel size ({dp}) = {micro_batch_size * dp}: "
                f"use a global batch that is a multiple of {micro_batch_size * dp}."
            )
        num_microbatches = global_batch_size // (micro_batch_size * dp)
        vpp = self.virtual_pipeline_model_parallel_size or 1
        pp = self.pipeline_model_parallel_size
        if vpp > 1 and num_microbatches % pp != 0:
            raise LayoutError(
                f"the interleaved pipeline schedule needs the number of micro-batches "
                f"({num_microbatches} = global {global_batch_size} / (micro {micro_batch_size} x "
                f"data parallel {dp})) to be a multiple of pipeline_model_parallel_size={pp}."
            )
        return num_microbatches

    def validate_run(self, *, world_size: int, model_config: Any = None, data: Any = None) -> int:
        """All checks for one run; returns micro-batches per step (1 without a data module).

        `model_config` and `data` are read by attribute (a TransformerConfig and a data module
        with global_batch_size / micro_batch_size / seq_length), so Fiddle configs can be
        checked the same way once built, and nothing here imports torch.
        """
        self.validate_world(world_size)
        if model_config is not None:
            self.validate_model(
                num_layers=model_config.num_layers,
                num_attention_heads=model_config.num_attention_heads,
                num_query_groups=getattr(model_config, "num_query_groups", None),
                seq_length=getattr(model_config, "seq_length", None),
                num_moe_experts=getattr(model_config, "num_moe_experts", None),
                ffn_hidden_size=getattr(model_config, "ffn_hidden_size", None),
            )
        if data is None:
            return 1
        missing = [
            k for k in ("global_batch_size", "micro_batch_size", "seq_length") if not hasattr(data, k)
        ]
        if missing:
            raise LayoutError(
                f"the data module {type(data).__name__} lacks {missing}: Megatron's schedule needs "
                "global_batch_size, micro_batch_size and seq_length."
            )
        model_seq = getattr(model_config, "seq_length", None)
        if model_seq is not None and data.seq_length > model_seq:
            raise LayoutError(
                f"data seq_length={data.seq_length} exceeds the model's seq_length={model_seq}: "
                "make them equal."
            )
        if self.context_parallel_size > 1 and data.seq_length % (2 * self.context_parallel_size):
            raise LayoutError(
                f"data seq_length={data.seq_length} is not divisible by 2 x "
                f"context_parallel_size = {2 * self.context_parallel_size}."
            )
        microbatches = self.validate_batch(
            world_size=world_size,
            global_batch_size=data.global_batch_size,
            micro_batch_size=data.micro_batch_size,
        )
        try:  # every global batch of a ramp-up must split the same way
            ramp = BatchRamp.parse(getattr(data, "rampup_batch_size", None), data.global_batch_size)
            if ramp is not None:
                vpp = self.virtual_pipeline_model_parallel_size or 1
                ramp.check(data.micro_batch_size, self.data_parallel_size(world_size),
                           self.pipeline_model_parallel_size if vpp > 1 else 1)
        except RampError as error:
            raise LayoutError(str(error)) from None
        return microbatches
