"""Train a tiny megatron MoE GPT on CPU ranks (gloo) and print per-step losses.

Run with torchrun; the parallel layout comes from the environment:

    TP=1 EP=1 SAVE=1 CKPT=/tmp/moe_w.pt torchrun --nproc-per-node 1 check_moe_cpu.py
    TP=1 EP=2        CKPT=/tmp/moe_w.pt torchrun --nproc-per-node 2 check_moe_cpu.py
    TP=2 EP=2        CKPT=/tmp/moe_w.pt torchrun --nproc-per-node 2 check_moe_cpu.py  # + SP
    TP=2 EP=1 ETP=2  CKPT=/tmp/moe_w.pt torchrun --nproc-per-node 2 check_moe_cpu.py  # expert TP

SAVE=1 (only at TP=1 EP=1) writes the full initial weights to CKPT with torch.save; other
layouts load them, taking their TP slice of each parameter (megatron's use_cpu_initialization
splits contiguously along `partition_dim`) and mapping each local expert to its global index
(ep_rank * experts_per_rank + local index), so every layout starts from the same weights.
DISPATCHERS (comma separated, default "allgather,alltoall") are each trained from those
weights in the same process. Data parallel ranks take disjoint slices of one fixed global
batch, and losses are exact token means (calculate_per_token_loss), so every layout should
print the same numbers. Output lines: ``RESULT <dispatcher> <step> <loss> <grad_norm>``.
"""

from __future__ import annotations

import os
import sys

import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

GLOBAL_BATCH, MICRO_BATCH, SEQ, VOCAB, STEPS = 8, 2, 32, 128, 3


class SPNorm:
    """torch LayerNorm whose params megatron all-reduces over TP when sequence parallel is on."""

    def __new__(cls, config, hidden_size, eps=1e-5, **_):
        norm = torch.nn.LayerNorm(hidden_size, eps=eps)
        for param in norm.parameters():
            param.sequence_parallel = bool(config.sequence_parallel)
        return norm


def layer_spec(config):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    spec = get_gpt_layer_local_spec(num_experts=config.num_moe_experts, moe_grouped_gemm=False)
    spec.submodules.input_layernorm = SPNorm
    spec.submodules.pre_mlp_layernorm = SPNorm
    return TransformerBlockSubmodules(layer_specs=[spec] * config.num_layers, layer_norm=SPNorm)


def build(dispatcher: str, tp: int, ep: int, etp: int):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import TransformerConfig

    config = TransformerConfig(
        num_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        ffn_hidden_size=128,
        num_moe_experts=4,
        moe_router_topk=2,
        moe_token_dispatcher_type=dispatcher,
        moe_aux_loss_coeff=float(os.environ.get("AUX", 0.0)),
        moe_router_load_balancing_type="aux_loss" if float(os.environ.get("AUX", 0.0)) else "none",
        add_bias_linear=False,
        use_cpu_initialization=True,
        tensor_model_parallel_size=tp,
        expert_model_parallel_size=ep,
        expert_tensor_parallel_size=etp,
        sequence_parallel=tp > 1,
        calculate_per_token_loss=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        pipeline_dtype=torch.float32,
    )
    model = GPTModel(config, layer_spec(config), vocab_size=VOCAB, max_sequence_length=SEQ)
    return config, model


def load_full_weights(model, full: dict, ep: int) -> None:
    """Copy TP1/EP1 weights into this rank's shards of `model`."""
    import re

    from megatron.core import parallel_state as ps

    ep_rank = ps.get_expert_model_parallel_rank()
    per_rank = model.config.num_moe_experts // ep
    for name, param in model.named_parameters():
        key = re.sub(
            r"local_experts\.(\d+)\.",
            lambda m: f"local_experts.{ep_rank * per_rank + int(m.group(1))}.",
            name,
        )
        value = full[key]
        if value.shape != param.shape:
            dim = param.partition_dim
            assert getattr(param, "partition_stride", 1) == 1, name
            expert = not getattr(param, "allreduce", True)
            rank = (
                ps.get_expert_tensor_parallel_rank()
                if expert
                else ps.get_tensor_model_parallel_rank()
            )
            value = value.chunk(value.shape[dim] // param.shape[dim], dim=dim)[rank]
        with torch.no_grad():
            param.copy_(value)


def main() -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    from megatron.core import parallel_state as ps

    tp, ep = int(os.environ.get("TP", 1)), int(os.environ.get("EP", 1))
    etp = int(os.environ.get("ETP", 1))  # expert TP; >1 makes the dispatchers gather over it
    if ep == 1 and etp != tp:
        # megatron marks expert params `allreduce=False` only when EP > 1; at EP 1 with ETP < TP
        # the TP ranks hold replicated experts fed different tokens and nothing syncs their grads.
        raise SystemExit(
            f"EP=1 needs ETP == TP (got TP={tp} ETP={etp}): megatron leaves expert grads unsynced"
        )
    ps.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        expert_model_parallel_size=ep,
        expert_tensor_parallel_size=etp,
    )

    from nemo_lite.lightning import _cpu, _cpu_moe

    _cpu.apply()
    skip = set(filter(None, os.environ.get("SKIP_SHIMS", "").split(",")))  # to show each is needed
    for shim in _cpu_moe.MOE_SHIMS:
        if shim.name not in skip:
            shim.install()

    from megatron.core.distributed import DistributedDataParallel as DDP
    from megatron.core.distributed import DistributedDataParallelConfig, finalize_model_grads
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    ckpt = os.environ["CKPT"]
    save = os.environ.get("SAVE") == "1"
    rank = dist.get_rank()
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    tokens = torch.randint(
        0, VOCAB, (GLOBAL_BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0)
    )
    shard = tokens.chunk(dp)[dp_rank]
    positions = torch.arange(SEQ)

    def forward_step(data, model):
        batch = next(data)
        out = model(batch[:, :-1], positions.expand(batch.shape[0], SEQ), None, labels=batch[:, 1:])

        def loss_func(losses):
            total = losses.float().sum()
            count = torch.tensor(losses.numel(), dtype=torch.int)
            return total, count, {"sum": torch.stack([total.detach(), count.float()])}

        return out, loss_func

    for dispatcher in os.environ.get("DISPATCHERS", "allgather,alltoall").split(","):
        model_parallel_cuda_manual_seed(1234)
        config, model = build(dispatcher, tp, ep, etp)
        if save:
            assert tp == ep == 1 and dist.get_world_size() == 1, "SAVE=1 needs TP=1 EP=1, 1 rank"
            torch.save({n: p.detach().clone() for n, p in model.named_parameters()}, ckpt)
            save = False  # later dispatchers load what the first one saved
        load_full_weights(model, torch.load(ckpt), ep)
        model = DDP(config, DistributedDataParallelConfig(), model)
        config.finalize_model_grads_func = finalize_model_grads
        opt = get_megatron_optimizer(OptimizerConfig(lr=1e-2, clip_grad=1.0, bf16=False), [model])
        for step in range(STEPS):
            model.zero_grad_buffer()
            opt.zero_grad()
            outs = get_forward_backward_func()(
                forward_step_func=forward_step,
                data_iterator=iter(shard.split(MICRO_BATCH)),
                model=[model],
                num_microbatches=len(shard) // MICRO_BATCH,
                seq_length=SEQ,
                micro_batch_size=MICRO_BATCH,
                forward_only=False,
            )
            _, grad_norm, _ = opt.step()
            total = sum(o["sum"] for o in outs)
            dist.all_reduce(total, group=ps.get_data_parallel_group())
            if rank == 0:
                loss = (total[0] / total[1]).item()
                print(f"RESULT {dispatcher} {step} {loss:.8f} {grad_norm:.8f}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
