"""Checkpointed training runs, several per torchrun launch; per-step losses go to a JSONL file.

Usage: torchrun --nproc-per-node N ckpt_run.py SPEC.json, or python ckpt_run.py SPEC.json with
"devices": N in each run (Lightning's launcher starts the other ranks)
SPEC.json: {"runs": [{"name": ..., "model": "gpt"|"moe", "tp": 1, "pp": 1, "ep": 1,
            "dist_opt": false, "fully_reshardable": false, "steps": 4, "save_every": 2,
            "run_dir": str, "resume": "if_exists" | PATH | null, "losses": PATH,
            "dropout": 0.0, "slow_commit_at_step": null, "marker": PATH,
            "pause_after_step": null, "step_delay": null, "devices": null,
            "watchdog_timeout": null, "val_every": null, "monitor": "step", "mode": "max",
            "vocab": 512, "precision": "32", "loss_scale": 2**32,
            "load_optimizer": true, "main_params_at_step": null,
            "restore": null | PATH, "load_optim_state": false, "ckpt_options": {},
            "gbs": 8, "mbs": 2, "rampup": null | [start, increment, ramp_samples]}, ...]}
Losses are appended (and fsynced) by global rank 0 as {"step": k, "loss": x} right after each
step, so a run killed with SIGKILL keeps every loss it reached. With `main_params_at_step`, the
fp32 main weights the optimizer holds are fingerprinted after that step (a saver) and at the
start of training (a resumed or restored run, right after its load): {"main_params": {name:
[sum, sum of squares, sum of Adam's exp_avg_sq]}}, summed in float64 over every rank's shard, so
any DP/TP layout gives the same record. `restore` starts from a checkpoint through
RestoreConfig (weights, plus the optimizer state with `load_optim_state`); `ckpt_options` go
to MegatronStrategy as keyword arguments.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
from megatron.core.optimizer import OptimizerConfig

from nemo_lite import lightning as nl
from nemo_lite import llm
from nemo_lite.lightning.checkpoint_io import MegatronCheckpointIO

SEQ = 32
VOCAB = 512


class SlowCommitIO(MegatronCheckpointIO):
    """Holds one save open (weights written, not yet committed) so a test can kill it there."""

    def __init__(self, step: int, marker: str) -> None:
        super().__init__()
        self.step, self.marker = step, marker

    def _commit(self, tmp, final, manifest):
        if manifest.get("step") == self.step:
            Path(self.marker).write_text(str(tmp))
            time.sleep(300)
        super()._commit(tmp, final, manifest)


class LossLog(pl.Callback):
    """Logs each step's loss; with `pause_after_step`, then waits there to be killed."""

    def __init__(self, path: str, pause_after_step: int | None = None,
                 step_delay: float | None = None) -> None:
        self.path, self.pause_after_step, self.step_delay = path, pause_after_step, step_delay

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "loss": float(outputs["loss"]),
                                    "lr": trainer.optimizers[0].lr,
                                    "global_batch": trainer.strategy.step_global_batch_size,
                                    "consumed": trainer.datamodule.consumed_samples(
                                        trainer.global_step)}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if trainer.global_step == self.pause_after_step:
            time.sleep(300)
        if self.step_delay:  # a slow step, for a signal to arrive in
            time.sleep(self.step_delay)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": trainer.global_step,
                                    "val_loss": float(trainer.callback_metrics["val_loss"])}) + "\n")


class MainParams(pl.Callback):
    """Fingerprints the optimizer's fp32 main weights (layouts without PP or experts).

    A TP-split parameter contributes from every TP rank, a replicated one from TP rank 0; the
    distributed optimizer's DP shards contribute from every DP rank, a plain optimizer's full
    copy from DP rank 0. Main weights re-derived from bf16/fp16 model weights change the sums
    of squares by about 1e-3 relative; the same fp32 values resharded by about 1e-15.
    """

    def __init__(self, path: str, step: int | None, at_start: bool) -> None:
        self.path, self.step, self.at_start = path, step, at_start

    def on_train_start(self, trainer, pl_module) -> None:
        if self.at_start:
            self._write(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self._write(trainer)

    def _write(self, trainer) -> None:
        import torch
        from megatron.core import parallel_state as ps

        names = {id(p): n.replace("module.", "") for chunk in trainer.strategy.megatron_parallel
                 for n, p in chunk.named_parameters()}
        record: dict[str, torch.Tensor] = {}
        mcore = trainer.optimizers[0].mcore
        for leaf in getattr(mcore, "chained_optimizers", [mcore]):
            inner = getattr(leaf, "optimizer", leaf)
            for model_param, main in main_param_pairs(leaf):
                if ps.get_tensor_model_parallel_rank() and not getattr(
                        model_param, "tensor_model_parallel", False):
                    continue
                if ps.get_data_parallel_rank() and not hasattr(leaf, "shard_fp32_groups"):
                    continue
                values = main.detach().double()
                moment = inner.state.get(main, {}).get("exp_avg_sq")
                moment = torch.zeros(()) if moment is None else moment.double().sum()
                record[names[id(model_param)]] = torch.stack(
                    [values.sum(), (values * values).sum(), moment.double()])
        keys = sorted(names[id(p)] for chunk in trainer.strategy.megatron_parallel
                      for p in chunk.parameters())
        stacked = torch.stack([record.get(k, torch.zeros(3, dtype=torch.float64)) for k in keys])
        torch.distributed.all_reduce(stacked)
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "main_params": {
                    k: v.tolist() for k, v in zip(keys, stacked, strict=True)}}) + "\n")


def main_param_pairs(optimizer):
    """(model parameter, the fp32 main weights the optimizer updates for it) of one optimizer."""
    if hasattr(optimizer, "shard_fp32_groups"):  # distributed: this rank's DP shard
        groups = [(optimizer.model_float16_groups, optimizer.shard_fp32_from_float16_groups),
                  (optimizer.model_fp32_groups, optimizer.shard_fp32_groups)]
    elif hasattr(optimizer, "fp32_from_float16_groups"):  # bf16/fp16 params, fp32 copies
        groups = [(optimizer.float16_groups, optimizer.fp32_from_float16_groups),
                  (optimizer.fp32_from_fp32_groups, optimizer.fp32_from_fp32_groups)]
    else:  # fp32 training: the model's own weights
        params = [p for g in optimizer.param_groups for p in g["params"]]
        groups = [([params], [params])]
    for models, mains in groups:
        for model_group, main_group in zip(models, mains, strict=True):
            yield from zip(model_group, main_group, strict=True)


def model_config(run: dict):
    drop = run.get("dropout", 0.0)
    common = dict(num_layers=4, hidden_size=run.get("hidden", 64), num_attention_heads=4,
                  seq_length=SEQ, vocab_size=run.get("vocab", VOCAB), hidden_dropout=drop,
                  attention_dropout=drop)
    if run.get("model", "gpt") == "moe":
        return llm.MixtralConfig(**{**common, "num_layers": 2}, num_query_groups=2,
                                 ffn_hidden_size=64, num_moe_experts=4, moe_aux_loss_coeff=0.0)
    return llm.GPTConfig(**common)


def train(run: dict) -> None:
    io = None
    if run.get("slow_commit_at_step"):
        io = SlowCommitIO(run["slow_commit_at_step"], run["marker"])
    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=run.get("tp", 1),
        pipeline_model_parallel_size=run.get("pp", 1),
        expert_model_parallel_size=run.get("ep", 1),
        sequence_parallel=run.get("tp", 1) > 1 and run.get("model") == "moe",
        ckpt_optim_fully_reshardable=run.get("fully_reshardable", False),
        ckpt_async_save=run.get("async_save", False),
        checkpoint_io=io,
        ckpt_load_optimizer=run.get("load_optimizer", True),
        **run.get("ckpt_options", {}),
    )
    trainer = nl.Trainer(
        strategy=strategy, accelerator="cpu",
        devices=run.get("devices") or int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        max_steps=run["steps"], limit_val_batches=2 if run.get("val_every") else 0,
        val_check_interval=run.get("val_every"), num_sanity_val_steps=0, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[LossLog(run["losses"], run.get("pause_after_step"), run.get("step_delay")),
                   *([MainParams(run["losses"], run["main_params_at_step"],
                                 at_start=bool(run.get("resume") or run.get("restore")))]
                     if run.get("main_params_at_step") else []),
                   *([nl.RankWatchdog(timeout_s=run["watchdog_timeout"])]
                     if run.get("watchdog_timeout") else [])],
        plugins=nl.MegatronMixedPrecision(precision=run.get("precision", "32"),
                                          fp16_initial_loss_scale=run.get("loss_scale", 2.0**32)),
    )
    optim = nl.MegatronOptimizerModule(
        OptimizerConfig(lr=3e-3, optimizer="adam", clip_grad=1.0, weight_decay=0.01,
                        use_distributed_optimizer=run.get("dist_opt", False)),
        lr_scheduler=nl.CosineAnnealingScheduler(max_steps=run.get("sched_steps", 8), warmup_steps=2,
                                                min_lr=3e-4),
    )
    model = llm.GPTModel(model_config(run), optim=optim)
    data = llm.MockDataModule(seq_length=SEQ, global_batch_size=run.get("gbs", 8),
                              micro_batch_size=run.get("mbs", 2),
                              rampup_batch_size=run.get("rampup"))
    resume = None
    if run.get("resume") == "if_exists":
        resume = nl.AutoResume(resume_if_exists=True, resume_ignore_no_checkpoint=True)
    elif run.get("resume"):
        resume = nl.AutoResume(resume_from_path=run["resume"])
    elif run.get("restore"):
        resume = nl.AutoResume(restore_config=nl.RestoreConfig(
            path=run["restore"], load_optim_state=run.get("load_optim_state", False)))
    log = nl.NeMoLogger(explicit_log_dir=run["run_dir"], tensorboard=False,
                        ckpt=nl.ModelCheckpoint(every_n_train_steps=run.get("save_every", 2),
                                                save_top_k=run.get("keep", 2),
                                                monitor=run.get("monitor", "step"),
                                                mode=run.get("mode", "max")))
    llm.train(model, data, trainer, log=log, resume=resume)


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    for run in spec["runs"]:
        train(run)


if __name__ == "__main__":
    main()
