"""Tiny GPT trained on Megatron indexed datasets through PreTrainingDataModule.

Usage: torchrun --nproc-per-node N pretraining_data_run.py SPEC.json
SPEC.json: {"paths": [...], "cache": DIR, "runs": [{"name": ..., "steps": 6, "save_every": 3,
            "stop_after": null | k, "val_every": 3, "run_dir": DIR, "log": PATH}, ...]}
Each rank appends one JSON line per step to `<log>.rank<r>`: the step, its loss (rank 0) and the
training samples this rank drew for it (sample index, CRC32 of its tokens); rank 0 also
appends {"step", "val_loss"} after each validation (2 global batches). `stop_after` ends the fit
after that step, as an interrupted run; running the same spec entry again resumes it.
"""

import json
import os
import sys
import zlib

import lightning.pytorch as pl
from megatron.core.datasets.utils import Split
from megatron.core.optimizer import OptimizerConfig

from nemo_lite import lightning as nl
from nemo_lite import llm
from nemo_lite.llm.data import pretraining
from nemo_lite.llm.data.pretraining import PreTrainingDataModule

SEQ = 32
DRAWN: list = []  # (sample index, CRC32 of tokens) since the last step ended


def _recording(getitem):
    def __getitem__(self, index):
        sample = getitem(self, index)
        if getattr(self.dataset, "split", None) is Split.train:  # not validation's samples
            DRAWN.append([int(index), zlib.crc32(sample["tokens"].numpy().tobytes())])
        return sample
    return __getitem__


class StepLog(pl.Callback):
    def __init__(self, path: str, stop_after) -> None:
        self.path, self.stop_after = path, stop_after

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = {"step": trainer.global_step, "samples": list(DRAWN)}
        DRAWN.clear()
        if trainer.is_global_zero:
            record["loss"] = float(outputs["loss"])
        with open(f"{self.path}.rank{trainer.global_rank}", "a") as f:
            f.write(json.dumps(record) + "\n")
        if trainer.global_step == self.stop_after:
            trainer.should_stop = True

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            with open(f"{self.path}.rank0", "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "val_loss": float(
                    trainer.callback_metrics["val_loss"])}) + "\n")


def train(spec: dict, run: dict) -> None:
    DRAWN.clear()
    trainer = nl.Trainer(
        strategy=nl.MegatronStrategy(), devices=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        accelerator="cpu", max_steps=run["steps"], val_check_interval=run["val_every"],
        limit_val_batches=2, num_sanity_val_steps=0,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[StepLog(run["log"], run.get("stop_after"))],
        plugins=nl.MegatronMixedPrecision(precision="32"),
    )
    optim = nl.MegatronOptimizerModule(
        OptimizerConfig(lr=3e-3, optimizer="adam", clip_grad=1.0, weight_decay=0.01),
        lr_scheduler=nl.CosineAnnealingScheduler(max_steps=run["steps"], warmup_steps=2,
                                                min_lr=3e-4),
    )
    config = llm.GPTConfig(num_layers=2, hidden_size=32, num_attention_heads=4, seq_length=SEQ,
                           hidden_dropout=0.0, attention_dropout=0.0)
    model = llm.GPTModel(config, optim=optim)
    data = PreTrainingDataModule(spec["paths"], seq_length=SEQ, global_batch_size=8,
                                 micro_batch_size=2, index_mapping_dir=spec["cache"], seed=5)
    log = nl.NeMoLogger(explicit_log_dir=run["run_dir"], tensorboard=False,
                        ckpt=nl.ModelCheckpoint(every_n_train_steps=run["save_every"],
                                                save_top_k=2))
    resume = nl.AutoResume(resume_if_exists=True, resume_ignore_no_checkpoint=True)
    llm.pretrain(model, data, trainer, log=log, resume=resume)


def main() -> None:
    pretraining.MegatronSamples.__getitem__ = _recording(pretraining.MegatronSamples.__getitem__)
    spec = json.load(open(sys.argv[1]))
    for run in spec["runs"]:
        train(spec, run)


if __name__ == "__main__":
    main()
