"""The one-screen summary rank 0 prints when training starts: what runs, where, how big.

Numbers come from the built model and the live layout, not from the config alone: the
parameters each rank really holds (gathered from every rank), the analytic total
(`count_parameters`), and the per-rank memory estimate the launch plan also prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunSummary:
    recipe: str
    run_dir: str
    world_size: int
    layout: str
    device: str
    precision: str
    model: str
    total_parameters: int
    parameters_per_rank: list[int]
    global_batch_size: int
    micro_batch_size: int
    num_microbatches: int
    memory_per_rank_gib: float | None
    memory_lines: list[str] = field(default_factory=list)
    batch_ramp: str | None = None  # BatchRamp.describe() when the global batch ramps up

    def lines(self) -> list[str]:
        per_rank = self.parameters_per_rank
        shown = ", ".join(f"{n:,}" for n in per_rank[:8]) + (" ..." if len(per_rank) > 8 else "")
        rows = [
            ("recipe", self.recipe),
            ("run dir", self.run_dir),
            ("ranks", f"{self.world_size} on {self.device}: {self.layout}"),
            ("model", self.model),
            ("parameters", f"{self.total_parameters:,} in total; per rank: {shown}"),
            ("batch", f"global {self.global_batch_size}, micro {self.micro_batch_size}, "
                      f"{self.num_microbatches} micro-batches per step and data-parallel rank"),
            *([("batch ramp", self.batch_ramp)] if self.batch_ramp else []),
            ("precision", self.precision),
        ]
        if self.memory_per_rank_gib is not None:
            gib = self.memory_per_rank_gib
            size = f"{gib:.2f} GiB" if gib >= 0.1 else f"{gib * 1024:.1f} MiB"
            rows.append(("memory/rank", f"{size} estimated (weights, grads, optimizer, "
                                        "activations; `--dryrun` shows the parts)"))
        width = max(len(name) for name, _ in rows)
        bar = "=" * 72
        return [bar, *(f"{name:<{width}}  {value}" for name, value in rows), bar]


def _local_parameters(model: Any) -> int:
    return sum(p.numel() for chunk in model.module for p in chunk.parameters())


def _gather(value: int) -> list[int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return [int(v) for v in out]


def run_summary(trainer: Any, model: Any) -> RunSummary:
    """Collective (every rank calls it: parameters are gathered)."""
    from nemo_lite.lightning.device import is_cuda
    from nemo_lite.llm.gpt.memory import estimate_memory
    from nemo_lite.llm.gpt.params import count_parameters

    strategy = trainer.strategy
    config = model.config
    world = trainer.world_size
    tp, pp = strategy.tensor_model_parallel_size, strategy.pipeline_model_parallel_size
    cp, ep = strategy.context_parallel_size, strategy.expert_model_parallel_size
    vpp = strategy.virtual_pipeline_model_parallel_size
    dp = max(world // (tp * pp * cp), 1)
    layout = f"TP {tp} x PP {pp} x CP {cp} x DP {dp}" + (f", EP {ep}" if ep > 1 else "") + (
        f", VPP {vpp}" if vpp else "") + (", SP" if strategy.sequence_parallel else "")
    vocab = config.vocab_size or getattr(model.tokenizer, "vocab_size", None)
    total = count_parameters(config, vocab, pad_vocab=True)
    precision = getattr(strategy.precision_plugin, "precision", "32")
    memory = None
    lines: list[str] = []
    try:
        estimate = estimate_memory(
            config, tp=tp, pp=pp, cp=cp, ep=ep, dp=dp, vpp=vpp,
            sequence_parallel=strategy.sequence_parallel, precision=str(precision),
            distributed_optimizer=bool(getattr(getattr(model.optim, "config", None),
                                               "use_distributed_optimizer", False)),
            micro_batch_size=strategy.micro_batch_size, num_microbatches=strategy.num_microbatches,
            vocab_size=vocab, flash_attention=is_cuda(strategy.root_device))
        memory, lines = estimate.total / 1024**3, estimate.lines()
    except (ValueError, TypeError, AttributeError):  # a model the estimate does not know
        pass
    backend = "nccl" if is_cuda(strategy.root_device) else "gloo"
    model_text = (f"{type(model).__name__}: {config.num_layers} layers, hidden "
                  f"{config.hidden_size}, {config.num_attention_heads} heads, seq "
                  f"{config.seq_length}" + (f", vocab {vocab}" if vocab else "")
                  + (f", {config.num_moe_experts} experts" if config.num_moe_experts else ""))
    return RunSummary(
        recipe=getattr(trainer, "recipe", None) or "(Python API)",
        run_dir=str(trainer.default_root_dir),  # NeMoLogger's run directory
        world_size=world, layout=layout,
        device=f"{strategy.root_device.type} ({backend})", precision=str(precision),
        model=model_text, total_parameters=total,
        parameters_per_rank=_gather(_local_parameters(model)),
        global_batch_size=strategy.global_batch_size, micro_batch_size=strategy.micro_batch_size,
        num_microbatches=strategy.num_microbatches, memory_per_rank_gib=memory,
        memory_lines=lines,
        batch_ramp=strategy.batch_ramp.describe(
            strategy.micro_batch_size, dp)
        if getattr(strategy, "batch_ramp", None) else None)
