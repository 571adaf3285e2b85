"""Masked SFT loss of the same examples, packed and unpacked, on CPU ranks (gloo); writes JSON.

Usage: torchrun --nproc-per-node 2 packed_parity_run.py DATA.jsonl OUT.json INIT_DIR
Every example of DATA.jsonl goes through FineTuningDataModule's validation loader (each example
once; the last global batch is padded with all-masked rows), gpt_data_step and gpt_forward_step of
a tiny megatron GPT (local layer spec, ContextParallelDotProductAttention). For each model and
layout it records the sum of masked per-token losses and the token count, summed over the
data-parallel ranks. Models: "gpt" (learned absolute positions), "gpt_rope", "llama" (RoPE, GQA,
SwiGLU, RMSNorm). Layouts: TP1 (DP2 on 2 ranks) and TP2 (+SP). A control run feeds the packed
rows without cu_seqlens (documents attend to each other) to show the comparison can fail.
Then nl.Trainer trains the llama model 3 steps at TP2 (and packed at PP2), each global batch
the whole data set, unpacked and packed, from the same initial weights: the losses must agree.
"""

import json
import sys

import torch
import torch.distributed as dist

SEQ = 64
PACKED = 150
VOCAB = 512  # padded the same at TP1 and TP2: the same initial weights


def init(tp: int, sp: bool = False) -> None:
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from nemo_lite.lightning import _cpu

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(tensor_model_parallel_size=tp)
    _cpu.apply()
    torch.manual_seed(1234)
    model_parallel_cuda_manual_seed(1234)


def build(kind: str, tp: int, sp: bool):
    from nemo_lite.llm.gpt.config import GPTConfig, LlamaConfig

    common = dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=SEQ,
                  vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0,
                  tensor_model_parallel_size=tp, sequence_parallel=sp,
                  init_method_std=0.1)  # sharper attention: leaks across documents show
    if kind == "gpt":
        config = GPTConfig(**common)
    elif kind == "gpt_rope":
        config = GPTConfig(**common, position_embedding_type="rope")
    else:
        config = LlamaConfig(**common, num_query_groups=2, ffn_hidden_size=128)
    model = config.configure_model()
    model.eval()
    return model


def data(path: str, packed: bool, mbs: int, gbs: int):
    from nemo_lite.llm.data.finetuning import FineTuningDataModule

    module = FineTuningDataModule(
        train_path=path, validation_path=path, seq_length=SEQ, micro_batch_size=mbs,
        global_batch_size=gbs, packed_sequence_size=PACKED if packed else None,
    )
    module.setup("validate")
    return module


@torch.no_grad()
def masked_loss(model, module, drop_cu_seqlens: bool = False, keep_tokens: bool = False) -> dict:
    """Loss sum, tokens and micro-batches over the data set (`keep_tokens`: also each trained
    token's loss, in order; one rank's, for TP1 controls)."""
    from megatron.core import parallel_state as ps

    from nemo_lite.llm.gpt.steps import gpt_data_step, gpt_forward_step

    total = torch.zeros(3, dtype=torch.float64)  # loss sum, tokens, micro-batches
    token_losses: list[float] = []
    for batch in module.val_dataloader():
        if drop_cu_seqlens:
            batch = {k: v for k, v in batch.items() if k not in ("cu_seqlens", "max_seqlen")}
        step = gpt_data_step(iter([batch]))
        losses = gpt_forward_step(model, step).double()
        mask = step["loss_mask"].double()
        total += torch.stack([(losses * mask).sum(), mask.sum(), torch.tensor(1.0)])
        if keep_tokens:
            token_losses += losses.reshape(-1)[mask.reshape(-1) > 0].tolist()
    dist.all_reduce(total, group=ps.get_data_parallel_group())
    loss_sum, tokens, micro_batches = total.tolist()
    out = {"loss_sum": loss_sum, "tokens": tokens, "micro_batches": micro_batches}
    return {**out, "token_losses": token_losses} if keep_tokens else out


def train(path: str, packed: bool, init_dir: str, pp: int = 1) -> list[float]:
    import lightning.pytorch as pl
    from megatron.core.optimizer import OptimizerConfig

    from nemo_lite import lightning as nl
    from nemo_lite.llm.gpt.config import LlamaConfig
    from nemo_lite.llm.gpt.model import GPTModel

    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            if not packed:
                trainer.strategy.save_weights(init_dir)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    mbs = 1 if packed else 2
    rows = len(data(path, packed, mbs, gbs=1).rows("train"))
    module = data(path, packed, mbs, gbs=rows)  # one global batch = the whole data set
    restore = nl.RestoreConfig(path=init_dir) if packed else None
    strategy = nl.MegatronStrategy(tensor_model_parallel_size=dist.get_world_size() // pp,
                                   pipeline_model_parallel_size=pp,
                                   restore_config=restore)  # DP1: any number of rows per batch
    trainer = nl.Trainer(strategy=strategy, devices=dist.get_world_size(), accelerator="cpu",
                         max_steps=3, enable_progress_bar=False, num_sanity_val_steps=0,
                         limit_val_batches=0, enable_model_summary=False, callbacks=[Record()],
                         plugins=nl.MegatronMixedPrecision(precision="32"))
    optim = nl.MegatronOptimizerModule(OptimizerConfig(lr=3e-3, optimizer="adam", clip_grad=1.0))
    # The model's seq_length is the packed row length (the schedule's P2P shape under PP).
    config = LlamaConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=PACKED,
                         vocab_size=VOCAB, num_query_groups=2, ffn_hidden_size=128)
    trainer.fit(GPTModel(config, optim=optim), module)
    return losses


def main() -> None:
    dist.init_process_group("gloo")
    path, out_path = sys.argv[1], sys.argv[2]
    world = dist.get_world_size()
    results = {}
    for tp, sp in ((1, False), (world, False), (world, True)):
        name = f"TP{tp}{'+SP' if sp else ''}"
        init(tp, sp)
        unpacked = data(path, packed=False, mbs=2, gbs=20)  # last batch padded
        packed = data(path, packed=True, mbs=1, gbs=4)
        for kind in ("gpt", "gpt_rope", "llama"):
            init(tp, sp)  # the same seeds: the same initial weights in every layout
            model = build(kind, tp, sp)
            results[f"{kind} {name} unpacked"] = masked_loss(model, unpacked)
            results[f"{kind} {name} packed"] = masked_loss(model, packed, keep_tokens=tp == 1)
            if tp == 1:
                results[f"{kind} {name} packed, no cu_seqlens"] = masked_loss(
                    model, packed, drop_cu_seqlens=True, keep_tokens=True)
        results[f"rows {name}"] = {"unpacked": len(unpacked.rows("validation")),
                                   "packed": len(packed.rows("validation"))}
    init_dir = sys.argv[3]
    results["train unpacked"] = train(path, packed=False, init_dir=init_dir)
    results["train packed"] = train(path, packed=True, init_dir=init_dir)
    results["train packed PP2"] = train(path, packed=True, init_dir=init_dir, pp=world)
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
