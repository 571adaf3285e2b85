"""Train several layouts one after another in the same torchrun processes; write their losses.

Usage: torchrun --nproc-per-node N parity_run.py SPEC.json OUT.json
SPEC.json: {"init_dir": str, "runs": [{"name": ..., "model": "gpt"|"llama"|"moe",
            "tp": 1, "pp": 1, "vpp": null, "cp": 1, "sp": false, "ep": 1,
            "dist_opt": false, "precision": "32", "steps": 5, "save_init": false,
            "vocab": 512, "fresh": false, "init": null, "attention": "auto",
            "config": {TransformerConfig field: value}}, ...]}
A run with save_init writes its initial weights to init_dir/<init or model>; the others start
from them, except `fresh` runs, which initialise from the seed (the same weights at every TP).
`vocab`: the vocabulary size (258 = the byte tokenizer's, padded per TP by megatron's rule).
Reusing the processes for many layouts keeps the suite fast (start-up dominates on CPU).
"""

from __future__ import annotations

import json
import os
import sys

import lightning.pytorch as pl
from megatron.core.optimizer import OptimizerConfig

from nemo_lite import lightning as nl
from nemo_lite import llm

SEQ = 64
VOCAB = 512  # divisible by 128 x TP for TP <= 4: the same padded vocab in every layout


def model_config(kind: str, dispatcher: str = "alltoall", vocab: int = VOCAB,
                 attention: str = "auto", extra: dict | None = None):
    """`attention`: megatron's attention_backend ("flash": torch SDPA kernels; "auto": the
    explicit score arithmetic on CPU); `extra`: more TransformerConfig fields (recompute)."""
    from megatron.core.transformer.enums import AttnBackend

    common = dict(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=SEQ,
                  vocab_size=vocab, hidden_dropout=0.0, attention_dropout=0.0,
                  attention_backend=AttnBackend[attention], **(extra or {}))
    if kind == "gpt":
        return llm.GPTConfig(**common)
    if kind == "llama":
        return llm.LlamaConfig(**common, num_query_groups=2, ffn_hidden_size=128)
    if kind == "moe":
        return llm.MixtralConfig(**{**common, "num_layers": 2}, num_query_groups=2,
                                 ffn_hidden_size=64, num_moe_experts=4, moe_aux_loss_coeff=0.0,
                                 moe_token_dispatcher_type=dispatcher)
    raise ValueError(kind)


class Recorder(pl.Callback):
    def __init__(self, run: dict, init_dir: str) -> None:
        self.run, self.init_dir = run, init_dir
        self.losses, self.grad_norms, self.updated, self.val_losses = [], [], [], []

    def on_train_start(self, trainer, pl_module) -> None:
        # training forward calls of this rank's transformer layers and core attentions:
        # recompute runs them again in the backward pass (a setting megatron ignored would not)
        self.calls = {"layer": 0, "core_attention": 0}
        for chunk in trainer.strategy.megatron_parallel:
            for name, module in chunk.named_modules():
                kind = ("core_attention" if name.endswith("core_attention") else
                        "layer" if type(module).__name__ == "TransformerLayer" else None)
                if kind:
                    module.register_forward_hook(self._counter(kind))
        if self.run.get("save_init"):
            trainer.strategy.save_weights(os.path.join(self.init_dir, init_name(self.run)))

    def _counter(self, kind: str):
        def count(module, *_) -> None:
            if module.training:  # not validation
                self.calls[kind] += 1
        return count

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        self.grad_norms.append(trainer.optimizers[0].last_grad_norm)
        self.updated.append(trainer.optimizers[0].last_update_successful)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        self.val_losses.append(float(outputs))


def init_name(run: dict) -> str:
    return run.get("init") or run["model"]


def train(run: dict, init_dir: str) -> dict:
    restore = None
    if not run.get("save_init") and not run.get("fresh"):
        restore = nl.RestoreConfig(path=os.path.join(init_dir, init_name(run)))
    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=run.get("tp", 1),
        pipeline_model_parallel_size=run.get("pp", 1),
        virtual_pipeline_model_parallel_size=run.get("vpp"),
        context_parallel_size=run.get("cp", 1),
        sequence_parallel=run.get("sp", False),
        expert_model_parallel_size=run.get("ep", 1),
        expert_tensor_parallel_size=run.get("etp"),
        restore_config=restore,
    )
    recorder = Recorder(run, init_dir)
    trainer = nl.Trainer(
        strategy=strategy, devices=int(os.environ.get("LOCAL_WORLD_SIZE", 1)), accelerator="cpu",
        max_steps=run.get("steps", 5), enable_progress_bar=False, num_sanity_val_steps=0,
        limit_val_batches=1.0 if run.get("val_every") else 0, val_check_interval=run.get("val_every"),
        enable_model_summary=False, callbacks=[recorder],
        plugins=nl.MegatronMixedPrecision(precision=run.get("precision", "32"),
                                          fp16_initial_loss_scale=run.get("loss_scale", 2.0**32)),
    )
    optim = nl.MegatronOptimizerModule(OptimizerConfig(
        lr=run.get("lr", 3e-3), optimizer="adam", clip_grad=1.0, weight_decay=0.01,
        use_distributed_optimizer=run.get("dist_opt", False)))
    config = model_config(run["model"], run.get("dispatcher", "alltoall"), run.get("vocab", VOCAB),
                          run.get("attention", "auto"), run.get("config", {}))
    model = llm.GPTModel(config, optim=optim)
    data = llm.MockDataModule(seq_length=SEQ, global_batch_size=8, micro_batch_size=2,
                              num_val_samples=run.get("val_samples", 16))
    trainer.fit(model, data)
    return {"losses": recorder.losses, "grad_norms": recorder.grad_norms,
            "updated": recorder.updated, "val_losses": recorder.val_losses,
            "forward_calls": recorder.calls}


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    results = {}
    for run in spec["runs"]:
        results[run["name"]] = train(run, spec["init_dir"])
    import torch.distributed as dist

    if dist.get_rank() == 0:
        with open(sys.argv[2], "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
