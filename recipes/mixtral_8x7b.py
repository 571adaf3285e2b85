"""mixtral_8x7b: Mixtral 8x7B (46.7e9 parameters, 12.9e9 active) on 8 nodes of 8 GPUs.

Pretraining, NeMo's layout: TP1 x PP4 with 8 virtual stages (one layer each), experts spread
8 ways (EP8: one expert per GPU), DP16; bf16, distributed optimizer, batch 512 x 4096 tokens,
LR 3e-4.
Fine-tuning: PP4 x EP8 on 4 nodes (32 GPUs: each GPU holds one expert of 8 layers), LR 5e-6.
Target: 8 nodes x 8 H100 80GB, bf16.
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes.data import mock_data
from recipes.log import log, restore, resume
from recipes.optim import finetune_optim, optim
from recipes.trainer import trainer as base_trainer

NAME = "mixtral_8x7b"
TARGET = "8 nodes x 8 H100 80GB, bf16"


def model() -> run.Config[llm.MixtralModel]:
    return run.Config(llm.MixtralModel, config=run.Config(llm.MixtralConfig8x7B))


def trainer(tp: int = 1, pp: int = 4, vpp: Optional[int] = 8, cp: int = 1, sp: bool = False,
            ep: int = 8, num_nodes: int = 8, num_gpus_per_node: int = 8,
            max_steps: int = 1_168_251, **kwargs) -> run.Config:
    return base_trainer(tp=tp, pp=pp, vpp=vpp, cp=cp, sp=sp, ep=ep, num_nodes=num_nodes,
                        devices=num_gpus_per_node, max_steps=max_steps, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 8,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain Mixtral 8x7B from scratch (MockDataModule until pretraining data modules land)."""
    return run.Partial(
        llm.pretrain,
        model=model(),
        trainer=trainer(num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node),
        data=mock_data(seq_length=4096, global_batch_size=512, micro_batch_size=1),
        log=log(name=name, dir=dir),
        optim=optim(lr=3e-4),
        resume=resume(),
    )


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 4,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None) -> run.Partial:
    """Full fine-tuning from the weights of `checkpoint`: PP4 x EP8, 1000 steps of
    128 x 2048 tokens, LR 5e-6.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line).
    """
    return run.Partial(
        llm.finetune,
        model=model(),
        trainer=trainer(vpp=None, num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node,
                        max_steps=1000, val_check_interval=100, limit_val_batches=8),
        data=mock_data(seq_length=2048, global_batch_size=128, micro_batch_size=1),
        log=log(name=name, dir=dir, every_n_train_steps=100),
        optim=finetune_optim(),
        resume=restore(checkpoint),
    )
