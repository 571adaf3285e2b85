"""Train every GPU recipe, pretrain then finetune, shrunk in Python, for 2 steps on 2 CPU ranks.

Usage: torchrun --nproc-per-node 2 recipe_train.py WORKDIR OUT.json
Only sizes change (layers, widths, heads, vocabulary, sequence and batch, the LR warmup, the
layout to fit 2 ranks) and the accelerator: each run goes through its recipe's own strategy,
megatron DDP config, optimizer and precision. The finetune recipe restores the pretrain run's
final checkpoint. Rank 0 writes, per run, the losses, a checksum of the weights at the start and
end of training, and the DDP / optimizer / precision settings the strategy ran with.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import fiddle as fdl
import lightning.pytorch as pl
import torch

from nemo_lite import llm

RECIPES = ["gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"]
# each fine-tuning kind: full, LoRA (TP1), DoRA (TP2 + SP; every expert's linears at EP2)
PEFT_SCHEMES = {"gpt_126m": None, "llama3_8b": "lora", "llama3_70b": "dora",
                "mixtral_8x7b": "dora"}


def shrink(recipe, name: str) -> None:
    config = recipe.model.config
    config.num_layers, config.hidden_size, config.ffn_hidden_size = 2, 64, 128
    config.num_attention_heads, config.seq_length, config.vocab_size = 4, 64, 1024
    if name != "gpt_126m":
        config.num_query_groups = 2
    if name == "mixtral_8x7b":
        config.moe_ffn_hidden_size = 128
    recipe.data.seq_length, recipe.data.global_batch_size, recipe.data.micro_batch_size = 64, 4, 1
    trainer = recipe.trainer
    trainer.accelerator, trainer.devices, trainer.num_nodes, trainer.max_steps = "cpu", 2, 1, 2
    strategy = trainer.strategy
    moe = name == "mixtral_8x7b"
    strategy.tensor_model_parallel_size = 1 if moe else min(strategy.tensor_model_parallel_size, 2)
    strategy.pipeline_model_parallel_size = 1
    strategy.virtual_pipeline_model_parallel_size = None
    strategy.context_parallel_size = 1
    strategy.expert_model_parallel_size = 2 if moe else 1
    recipe.optim.lr_scheduler.warmup_steps = 1


class Record(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.start = self.end = None

    @staticmethod
    def checksum(trainer, trainable: bool | None = None) -> float:
        """Sum of |w| over the model (`trainable` True / False: over the parameters that do /
        do not require grad), each parameter counted once whatever the layout."""
        from megatron.core import parallel_state as ps

        dp = ps.get_data_parallel_rank(with_context_parallel=True)
        expert_dp = ps.get_expert_data_parallel_rank()
        tp = ps.get_tensor_model_parallel_rank()
        total = torch.zeros(1, dtype=torch.float64)
        for chunk in trainer.strategy.megatron_parallel:
            if getattr(chunk, "use_forward_hook", False):  # overlapped gather: finish it now
                chunk.start_param_sync(force_sync=True)
            for param in chunk.parameters():
                if trainable is not None and param.requires_grad != trainable:
                    continue
                expert = not getattr(param, "allreduce", True)
                replica = (expert_dp if expert else dp) != 0 or (
                    not getattr(param, "tensor_model_parallel", False) and tp != 0)
                if not replica:
                    total += param.detach().double().abs().sum()
        torch.distributed.all_reduce(total)
        return float(total)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self.checksum(trainer)
        self.frozen_start = self.checksum(trainer, trainable=False)
        self.trainable_start = self.checksum(trainer, trainable=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = self.checksum(trainer)
        self.frozen_end = self.checksum(trainer, trainable=False)
        self.trainable_end = self.checksum(trainer, trainable=True)
        self.adapters = sorted({re.sub(r"\.\d+\.", ".*.", n.split(".adapter.")[0]).split("layers.*.")[-1]
                                for chunk in trainer.strategy.megatron_parallel
                                for n, p in chunk.named_parameters() if p.requires_grad})


def run(recipe, name: str) -> dict:
    shrink(recipe, name)
    task = fdl.build(recipe)
    trainer = task.keywords["trainer"]
    record = Record()
    trainer.callbacks.append(record)
    run_dir = task()
    strategy = trainer.strategy
    ddp = strategy.ddp_config
    optim = task.keywords["model"].optim.config
    return {
        "losses": record.losses, "start": record.start, "end": record.end,
        "frozen": [record.frozen_start, record.frozen_end],
        "trainable": [record.trainable_start, record.trainable_end],
        "adapted": record.adapters, "peft": type(task.keywords.get("peft")).__name__,
        "run_dir": str(run_dir),
        "ddp": {k: getattr(ddp, k) for k in ("overlap_grad_reduce", "overlap_param_gather",
                                             "grad_reduce_in_fp32", "average_in_collective",
                                             "use_distributed_optimizer")},
        "optimizer": {"distributed": optim.use_distributed_optimizer, "bf16": optim.bf16,
                      "lr": optim.lr},
        "precision": trainer.strategy.precision_plugin.precision,
        "async_save": strategy.ckpt_async_save,
    }


def final_checkpoint(run_dir: str) -> str:
    return str((Path(run_dir) / "checkpoints" / "last").resolve())


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    results = {}
    for name in RECIPES:
        module = getattr(llm, name)
        pre = run(module.pretrain_recipe(name=f"{name}_pretrain", dir=str(work),
                                         num_nodes=1, num_gpus_per_node=2), name)
        fine = run(module.finetune_recipe(name=f"{name}_finetune", dir=str(work), num_nodes=1,
                                          num_gpus_per_node=2,
                                          checkpoint=final_checkpoint(pre["run_dir"]),
                                          peft_scheme=PEFT_SCHEMES[name]), name)
        results[name] = {"pretrain": pre, "finetune": fine}
    if torch.distributed.get_rank() == 0:
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
