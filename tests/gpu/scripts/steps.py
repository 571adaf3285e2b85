"""A few training steps of a small Llama-style model on one device, as the GPU checks need them.

Usage: python steps.py OUT.json RUNS.json, RUNS.json: {"name": {"device": "cuda"|"cpu",
       "precision": "32", "steps": 4, "save": DIR, "restore": CKPT, "attention": "auto",
       "overlap": false}, ...}, run in order in this process (all on one device kind: CPU runs
       install nemo_lite's CPU shims, which must never touch a GPU run).
Writes {"name": {"losses", "backend", "start_checksum", "end_checksum", "uses_sdpa", "ddp",
"device"}}: the checksums are sum |w| over the model in float64 (at train start, i.e. after a
restore, and at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

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


def run(args: argparse.Namespace, work: str) -> dict:
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
    log = nl.NeMoLogger(explicit_log_dir=args.save or os.path.join(work, "logs"),
                        tensorboard=False,
                        ckpt=nl.ModelCheckpoint(every_n_train_steps=args.steps, save_top_k=1))
    resume = None
    if args.restore:
        resume = nl.AutoResume(restore_config=nl.RestoreConfig(path=args.restore))
    llm.train(model, data, trainer, log=log, resume=resume)
    return record.out


def main() -> None:
    out, runs = sys.argv[1], json.load(open(sys.argv[2]))
    defaults = {"precision": "32", "steps": 4, "save": None, "restore": None,
                "attention": "auto", "overlap": False}
    results = {name: run(argparse.Namespace(**{**defaults, **spec}), os.path.dirname(out))
               for name, spec in runs.items()}
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
