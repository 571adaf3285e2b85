"""LoRA runs for tests/peft and tests/distributed/test_lora.py; facts go to a JSON file.

Usage: torchrun --nproc-per-node N lora_run.py SPEC.json OUT.json
SPEC.json: {"work": DIR, "runs": [{"name": ..., "kind": "base" | "lora", "tp": 1, "pp": 1,
            "sp": false, "ep": 1, "model": "gpt" | "llama" | "moe", "precision": "32",
            "dist_opt": false, "scheme": "lora" | "dora",
            "steps": 6,
            "save_every": 3, "restore": PATH | null, "resume": PATH | null,
            "merge_check": false, "lr": 3e-3, "expect_error": false, "peft": true,
            "manifest_edit": {...}}, ...]}
A "base" run trains the plain model (the "pretrained" checkpoint); a "lora" run fine-tunes it
with llm.finetune(peft=LoRA(...)) from `restore` (RestoreConfig) or resumes `resume`.
Rank 0 writes, per run: losses, and (lora) what changed in training, what the optimizer holds,
the logits at the start vs the base model's, and (merge_check) adapted vs merged logits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from megatron.core.optimizer import OptimizerConfig

from nemo_lite import lightning as nl
from nemo_lite import llm
from nemo_lite.llm.peft.dora import DoRA
from nemo_lite.llm.peft.lora import LoRA, merge

SEQ = 32
VOCAB = 512


def held_out_batch() -> dict[str, torch.Tensor]:
    """Mock samples far beyond the ones any run trains on."""
    from nemo_lite.llm.data.mock import MockGPTDataset

    dataset = MockGPTDataset(num_samples=10**6, seq_length=SEQ, vocab_size=258, seed=1234)
    samples = [dataset[i] for i in range(500_000, 500_008)]
    return {k: torch.stack([s[k] for s in samples]) for k in ("tokens", "labels", "position_ids")}


@torch.no_grad()
def logits(pl_module, labels: bool = False) -> torch.Tensor:
    """This rank's logits (TP: its vocabulary shard), or with `labels` the per-token loss."""
    chunk = pl_module.module[0]
    was_training = chunk.training
    chunk.eval()
    batch = held_out_batch()
    out = chunk(batch["tokens"], batch["position_ids"], None,
                labels=batch["labels"] if labels else None)
    chunk.train(was_training)
    return out.float()


def trainable_names(pl_module) -> set[str]:
    return {n for n, p in pl_module.module.named_parameters() if p.requires_grad}


class Probe(pl.Callback):
    """Records what the tests check, at the start and the end of a run."""

    def __init__(self, run: dict, work: Path, out: dict) -> None:
        self.run, self.work, self.out = run, work, out
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {n: p.detach().clone() for n, p in pl_module.module.named_parameters()}
        if self.run.get("pp", 1) > 1:  # a pipeline stage alone cannot run the fixed batch
            return
        self.start_logits = logits(pl_module)
        self.out["held_out_loss_start"] = float(logits(pl_module, labels=True).mean())
        base_run = Path(self.run.get("restore") or "").parent.parent.name  # <base>/checkpoints/..
        base = self.work / f"{base_run}_logits_ranks{trainer.world_size}_{trainer.global_rank}.pt"
        if self.run["kind"] == "lora" and self.run.get("restore") and base.exists():
            diff = self.start_logits - torch.load(base)  # same layout as the base run
            self.out["init_vs_base_max_diff"] = float(diff.abs().max())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module) -> None:
        out = self.out
        out["losses"] = self.losses
        whole_model = self.run.get("pp", 1) == 1
        end_logits = logits(pl_module) if whole_model else None
        if whole_model:
            out["held_out_loss_end"] = float(logits(pl_module, labels=True).mean())
        if self.run["kind"] == "base":
            torch.save(end_logits, self.work /
                       f"{self.run['name']}_logits_ranks{trainer.world_size}_{trainer.global_rank}.pt")
            return
        params = dict(pl_module.module.named_parameters())
        trainable = trainable_names(pl_module)
        out["trainable"] = sorted(trainable)
        out["frozen_changed"] = sorted(n for n, p in params.items() if n not in trainable
                                       and not torch.equal(p.detach(), self.start[n]))
        out["trainable_unchanged"] = sorted(n for n in trainable
                                            if torch.equal(params[n].detach(), self.start[n]))
        optimizer = trainer.optimizers[0].mcore
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        out["optimizer_params"] = len(held)
        out["optimizer_holds_trainable_only"] = held == {id(params[n]) for n in trainable}
        out["total_params"] = sum(p.numel() for p in params.values())
        out["trainable_numel"] = sum(params[n].numel() for n in trainable)
        if self.run.get("merge_check"):
            merge(pl_module)
            merged = logits(pl_module)
            out["merge_max_diff"] = float((merged - end_logits).abs().max())
            out["merge_scale"] = float(end_logits.abs().max())
            out["adapter_effect"] = float((end_logits - self.start_logits).abs().max())
            out["merged_has_adapters"] = any(".adapter." in n for n, _ in
                                             pl_module.module.named_parameters())


def train(run: dict, work: Path) -> dict:
    out: dict = {}
    strategy = nl.MegatronStrategy(tensor_model_parallel_size=run.get("tp", 1),
                                   pipeline_model_parallel_size=run.get("pp", 1),
                                   expert_model_parallel_size=run.get("ep", 1),
                                   sequence_parallel=run.get("sp", False))
    trainer = nl.Trainer(
        strategy=strategy, devices=int(os.environ.get("LOCAL_WORLD_SIZE", 1)), accelerator="cpu",
        max_steps=run["steps"], limit_val_batches=0, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Probe(run, work, out)], plugins=nl.MegatronMixedPrecision(precision=run.get("precision", "32")))
    lr = run.get("lr", 3e-3)
    optim = nl.MegatronOptimizerModule(
        OptimizerConfig(lr=lr, optimizer="adam", clip_grad=1.0, weight_decay=0.01,
                        use_distributed_optimizer=run.get("dist_opt", False)),
        lr_scheduler=nl.CosineAnnealingScheduler(max_steps=run.get("sched_steps", 12),
                                                warmup_steps=1, min_lr=lr / 10))
    common = dict(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=SEQ,
                  vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0)
    if run.get("model") == "llama":  # SwiGLU: linear_fc1 holds [gate; up] per TP rank
        config = llm.LlamaConfig(**common, num_query_groups=2, ffn_hidden_size=128)
    elif run.get("model") == "moe":  # 4 SwiGLU experts (SequentialMLP), top 2, each adapted
        config = llm.MixtralConfig(**common, num_query_groups=2, ffn_hidden_size=128,
                                   moe_ffn_hidden_size=128, num_moe_experts=4)
    else:
        config = llm.GPTConfig(**common)
    model = llm.GPTModel(config, optim=optim)
    data = llm.MockDataModule(seq_length=SEQ, global_batch_size=8, micro_batch_size=4)
    log = nl.NeMoLogger(explicit_log_dir=str(work / run["name"]), tensorboard=False,
                        ckpt=nl.ModelCheckpoint(every_n_train_steps=run.get("save_every", 3),
                                                save_top_k=-1))
    if run["kind"] == "base":
        llm.train(model, data, trainer, log=log)
        return out
    if run.get("resume"):
        resume = nl.AutoResume(resume_from_path=copy_with_manifest_edit(run, work))
    else:
        resume = nl.AutoResume(restore_config=nl.RestoreConfig(path=run["restore"]))
    scheme = DoRA if run.get("scheme") == "dora" else LoRA
    peft = scheme(dim=8, alpha=16, dropout=0.0) if run.get("peft", True) else None
    llm.finetune(model, data, trainer, log=log, resume=resume, peft=peft)
    return out


def copy_with_manifest_edit(run: dict, work: Path) -> str:
    """`run["resume"]`, or a copy of it whose manifest has `run["manifest_edit"]` applied."""
    edit = run.get("manifest_edit")
    if not edit:
        return run["resume"]
    import shutil

    copy = work / f"{run['name']}_source" / Path(run["resume"]).name
    if int(os.environ.get("RANK", "0")) == 0:
        shutil.copytree(run["resume"], copy)
        manifest = json.loads((copy / "nemo_lite.json").read_text())
        (copy / "nemo_lite.json").write_text(json.dumps({**manifest, **edit}))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return str(copy)


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    work = Path(spec["work"])
    results = {}
    for run in spec["runs"]:
        if not run.get("expect_error"):
            results[run["name"]] = train(run, work)
            continue
        try:
            train(run, work)
            results[run["name"]] = {"error": None}
        except Exception as error:  # noqa: BLE001 - the test checks type and message
            results[run["name"]] = {"error": type(error).__name__, "message": str(error)}
    if torch.distributed.get_rank() == 0:
        Path(sys.argv[2]).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
