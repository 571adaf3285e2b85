"""gpt_126m: GPT-3 Small (NeMo's GPTConfig126M, 125.2e6 parameters) on one node of 8 GPUs.

Data parallel only (TP1 PP1, DP8), bf16, distributed optimizer; the GPT-3 paper's recipe:
batch 256 x 2048 tokens (0.5M), LR 6e-4 -> 6e-5, 300B tokens. The model also fits one GPU:
`pretrain_recipe(num_gpus_per_node=1)` (the batch is then reached with more micro-batches).
Target: 1 node x 8 bf16 GPUs (A100 / H100).
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes.data import mock_data
from recipes.log import log, restore, resume
from recipes.optim import finetune_optim, optim
from recipes.trainer import trainer as base_trainer

NAME = "gpt_126m"
TARGET = "1 node x 8 GPUs (A100/H100), bf16"
TOKENS = 300_000_000_000  # GPT-3's training budget
GLOBAL_BATCH = 256


def model() -> run.Config[llm.GPTModel]:
    return run.Config(llm.GPTModel, config=run.Config(llm.GPTConfig126M))


def trainer(tp: int = 1, pp: int = 1, cp: int = 1, num_nodes: int = 1,
            num_gpus_per_node: int = 8, max_steps: int = TOKENS // (GLOBAL_BATCH * 2048),
            **kwargs) -> run.Config:
    return base_trainer(tp=tp, pp=pp, cp=cp, num_nodes=num_nodes, devices=num_gpus_per_node,
                        max_steps=max_steps, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain GPT-3 Small: 572K steps of 256 x 2048 tokens (300B), warmup 715 steps."""
    return run.Partial(
        llm.pretrain,
        model=model(),
        trainer=trainer(num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node),
        data=mock_data(seq_length=2048, global_batch_size=GLOBAL_BATCH, micro_batch_size=4),
        log=log(name=name, dir=dir),
        optim=optim(lr=6e-4, min_lr=6e-5, warmup_steps=715, adam_eps=1e-8),
        resume=resume(),
    )


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None) -> run.Partial:
    """Full fine-tuning from the weights of `checkpoint`: LR 1e-5, 1000 steps of 128 x 2048.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line). The model
    keeps seq_length 2048 (its learned position table must match the checkpoint).
    """
    return run.Partial(
        llm.finetune,
        model=model(),
        trainer=trainer(num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node,
                        max_steps=1000, val_check_interval=100, limit_val_batches=8),
        data=mock_data(seq_length=2048, global_batch_size=128, micro_batch_size=4),
        log=log(name=name, dir=dir, every_n_train_steps=100),
        optim=finetune_optim(lr=1e-5),
        resume=restore(checkpoint),
    )
