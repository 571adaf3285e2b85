"""A few training steps of a small Llama-style model on one device, as the GPU checks need them.

Usage: python steps.py OUT.json --device cuda|cpu [--precision 32|bf16-mixed] [--steps N]
       [--save DIR] [--restore CKPT] [--attention auto|local|flash] [--overlap]
Writes {"losses", "backend", "start_checksum", "end_checksum", "uses_sdpa", "ddp", "device"}:
the checksums are sum |w| over the model in float64 (at train start, i.e. after a restore, and
at the end). One process per run: CPU runs install nemo_lite's CPU shims, which must never
touch a GPU run.
"""

from __future__ import annotations

import argparse
import json
import os

import lightning.pytorch as pl
import torch
from megatron.core.optimizer import OptimizerConfig
from megatron.core.transformer.enums import AttnBackend

from nemo_lite import lightning as nl
from nemo_lite import llm


def checksum(trainer) -> float:
    total = torch.zeros((), dtype=torch.float64)
    for chunk in trainer.strategy.megatron_parallel:
        for param in chunk.parameters():
            total += param.detach().double().abs().sum().cpu()
    return float(total)


class Record(pl.Callback):
    def __init__(self) -> None:
        self.out: dict = {"losses": []}

    def on_train_start(self, trainer, pl_module) -> None:
        self.out["backend"] = torch.distributed.get_backend()
        self.out["start_checksum"] = checksum(trainer)
        module = trainer.strategy.megatron_parallel[0]
        while not hasattr(module, "decoder") and hasattr(module, "module"):
            module = module.module
        core = module.decoder.layers[0].self_attention.core_attention
        self.out["uses_sdpa"] = bool(core.uses_sdpa(trainer.strategy.root_device))
        ddp = trainer.strategy.ddp_config
        self.out["ddp"] = {k: getattr(ddp, k) for k in (
            "overlap_grad_reduce", "overlap_param_gather", "use_distributed_optimizer",
            "bucket_size", "grad_reduce_in_fp32")}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.out["losses"].append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.out["end_checksum"] = checksum(trainer)
        self.out["device"] = str(trainer.strategy.root_device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--precision", default="32")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--save", default=None)
    parser.add_argument("--restore", default=None)
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--overlap", action="store_true")
    args = parser.parse_args()
    record = Record()
    callbacks: list = [record]
    if args.overlap:
        callbacks.append(nl.MegatronCommOverlapCallback(overlap_grad_reduce=True,
                                                        overlap_param_gather=True))
    trainer = nl.Trainer(
        strategy=nl.MegatronStrategy(), devices=1,
        accelerator="gpu" if args.device == "cuda" else "cpu", max_steps=args.steps,
        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
        callbacks=callbacks, plugins=nl.MegatronMixedPrecision(precision=args.precision))
    config = llm.Llama3Config(num_layers=2, hidden_size=128, ffn_hidden_size=256,
                              num_attention_heads=4, num_query_groups=2, vocab_size=512,
                              seq_length=128, attention_backend=AttnBackend[args.attention],
                              hidden_dropout=0.0, attention_dropout=0.0)
    optim = nl.MegatronOptimizerModule(
        OptimizerConfig(lr=1e-3, clip_grad=1.0, use_distributed_optimizer=args.overlap))
    model = llm.GPTModel(config, optim=optim)
    data = llm.MockDataModule(seq_length=128, global_batch_size=4, micro_batch_size=2)
    log = nl.NeMoLogger(explicit_log_dir=args.save or os.path.dirname(args.out) + "/logs",
                        tensorboard=False,
                        ckpt=nl.ModelCheckpoint(every_n_train_steps=args.steps, save_top_k=1))
    resume = None
    if args.restore:
        resume = nl.AutoResume(restore_config=nl.RestoreConfig(path=args.restore))
    llm.train(model, data, trainer, log=log, resume=resume)
    with open(args.out, "w") as f:
        json.dump(record.out, f)


if __name__ == "__main__":
    main()
