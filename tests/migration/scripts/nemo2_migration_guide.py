"""NeMo 2.0's migration-guide pieces (trainer, optimizer, exp_manager -> NeMoLogger + AutoResume,
pretraining, fine-tuning) put together as one script, ported to nemo_lite.

Sources (docs.nvidia.com/nemo-framework/user-guide/latest/nemo-2.0/):
  migration/trainer.html, migration/optimizer.html, migration/exp-manager.html,
  features/logging.html, migration/pretraining.html, migration/sft.html.
What changed from the guide's snippets:
  - `from nemo import lightning as nl` / `from nemo.collections import llm` -> nemo_lite;
  - accelerator "gpu" -> "cpu", and one CPU process (devices=1) so that the script can pretrain and
    then fine-tune in the same process (Lightning re-runs a script per extra rank);
  - sizes, steps and intervals shrunk (marked `# guide:`); MockDataModule instead of
    PreTrainingDataModule / FineTuningDataModule (not in nemo_lite yet).
  - fine-tuning starts from the pretraining checkpoint with `nl.RestoreConfig(path=...)` where the
    guide imports a Hugging Face model (`llm.import_ckpt`, not in nemo_lite).
Usage: python nemo2_migration_guide.py WORKDIR
"""

import sys
from pathlib import Path

import torch
from megatron.core.optimizer import OptimizerConfig

from nemo_lite import lightning as nl  # guide: from nemo import lightning as nl
from nemo_lite import llm  # guide: from nemo.collections import llm


def make_trainer(max_steps: int, val_check_interval: int) -> nl.Trainer:
    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=1,
        pipeline_model_parallel_size=1,
        virtual_pipeline_model_parallel_size=None,
        context_parallel_size=1,
        sequence_parallel=False,
        expert_model_parallel_size=1,
        pipeline_dtype=torch.bfloat16,
        ckpt_async_save=False,
        ckpt_parallel_load=True,
    )
    return nl.Trainer(
        num_nodes=1,
        devices=1,  # guide: 2
        accelerator="cpu",  # guide: "gpu"
        strategy=strategy,
        plugins=nl.MegatronMixedPrecision(precision="bf16-mixed"),
        max_epochs=None,
        max_steps=max_steps,  # guide: 75000
        max_time="05:23:30:00",
        log_every_n_steps=1,  # guide: 10
        val_check_interval=val_check_interval,  # guide: 2000
        limit_val_batches=2,  # guide: 50
        limit_test_batches=2,  # guide: 50
        accumulate_grad_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
    )


def make_optim(lr: float, warmup_steps: int) -> nl.MegatronOptimizerModule:
    return nl.MegatronOptimizerModule(
        config=OptimizerConfig(
            optimizer="adam",
            lr=lr,
            clip_grad=1.0,
            use_distributed_optimizer=True,
        ),
        lr_scheduler=nl.lr_scheduler.CosineAnnealingScheduler(
            warmup_steps=warmup_steps,  # guide: 750
            constant_steps=0,  # guide: 80000
            min_lr=lr / 10,
        ),
    )


def make_model() -> llm.GPTModel:
    gpt_config = llm.GPTConfig(
        num_layers=2,  # guide: 12
        hidden_size=64,  # guide: 384
        ffn_hidden_size=256,  # guide: 1536
        num_attention_heads=4,  # guide: 6
        seq_length=64,  # guide: 2048
        init_method_std=0.023,
        hidden_dropout=0.0,  # guide: 0.1
        attention_dropout=0.0,  # guide: 0.1
        layernorm_epsilon=1e-5,
        make_vocab_size_divisible_by=128,
    )
    data = llm.MockDataModule(seq_length=64, global_batch_size=8, micro_batch_size=2)
    return llm.GPTModel(gpt_config, tokenizer=data.tokenizer), data


def pretrain(workdir: Path) -> None:
    model, data = make_model()
    checkpoint_callback = nl.ModelCheckpoint(
        save_last=True,
        monitor="val_loss",
        save_top_k=2,
        every_n_train_steps=4,  # guide: 30
        always_save_context=True,
    )
    nemo_logger = nl.NeMoLogger(
        log_dir=str(workdir / "my_logging_dir"),
        name="experiment1",
        use_datetime_version=False,
        ckpt=checkpoint_callback,
    )
    resume = nl.AutoResume(
        resume_if_exists=True,
        resume_ignore_no_checkpoint=True,
    )
    llm.pretrain(
        model=model,
        data=data,
        trainer=make_trainer(max_steps=8, val_check_interval=4),
        log=nemo_logger,
        resume=resume,
        optim=make_optim(lr=3e-3, warmup_steps=2),
    )


def finetune(workdir: Path, checkpoint: str) -> None:
    model, data = make_model()
    resume = nl.AutoResume(restore_config=nl.RestoreConfig(path=checkpoint))
    llm.finetune(
        model=model,
        data=data,
        trainer=make_trainer(max_steps=2, val_check_interval=2),
        log=nl.NeMoLogger(log_dir=str(workdir / "my_logging_dir"), name="sft",
                          use_datetime_version=False),
        resume=resume,
        optim=make_optim(lr=3e-4, warmup_steps=0),
    )


if __name__ == "__main__":
    workdir = Path(sys.argv[1])
    pretrain(workdir)
    ckpts = workdir / "my_logging_dir" / "experiment1" / "checkpoints"
    final = sorted(p for p in ckpts.iterdir() if "step=8-" in p.name and not p.name.endswith("-last"))
    print("pretraining checkpoints:", sorted(p.name for p in ckpts.iterdir()), flush=True)
    finetune(workdir, str(final[0]))
