"""llama3_70b: Llama 3 70B (70.6e9 parameters) on 4 nodes of 8 GPUs, NeMo's default layout.

Pretraining: TP4 (+ sequence parallel) x PP4 with 5 virtual stages (4 layers each) x CP2 =
32 GPUs, one model replica; bf16, distributed optimizer, batch 512 x 8192, LR 3e-4.
Add nodes to add data-parallel replicas (num_nodes=8: DP2).
Fine-tuning: TP8 x PP4 on 4 nodes (NeMo's full fine-tuning layout), LR 5e-6.
Target: 4 nodes x 8 H100 80GB, bf16.
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes.data import mock_data
from recipes.log import log, restore, resume
from recipes.optim import finetune_optim, optim
from recipes.trainer import trainer as base_trainer

NAME = "llama3_70b"
TARGET = "4 nodes x 8 H100 80GB, bf16"


def model() -> run.Config[llm.LlamaModel]:
    return run.Config(llm.LlamaModel, config=run.Config(llm.Llama3Config70B))


def trainer(tp: int = 4, pp: int = 4, vpp: Optional[int] = 5, cp: int = 2, sp: bool = True,
            num_nodes: int = 4, num_gpus_per_node: int = 8, max_steps: int = 1_168_251,
            **kwargs) -> run.Config:
    return base_trainer(tp=tp, pp=pp, vpp=vpp, cp=cp, sp=sp, num_nodes=num_nodes,
                        devices=num_gpus_per_node, max_steps=max_steps, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 4,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain Llama 3 70B from scratch (MockDataModule until pretraining data modules land)."""
    return run.Partial(
        llm.pretrain,
        model=model(),
        trainer=trainer(num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node),
        data=mock_data(seq_length=8192, global_batch_size=512, micro_batch_size=1),
        log=log(name=name, dir=dir),
        optim=optim(lr=3e-4),
        resume=resume(),
    )


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 4,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None) -> run.Partial:
    """Full fine-tuning from the weights of `checkpoint`: TP8 x PP4 (+ SP), 1000 steps of
    128 x 2048 tokens, LR 5e-6.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line).
    """
    return run.Partial(
        llm.finetune,
        model=model(),
        trainer=trainer(tp=8, pp=4, vpp=None, cp=1, sp=True, num_nodes=num_nodes,
                        num_gpus_per_node=num_gpus_per_node, max_steps=1000,
                        val_check_interval=100, limit_val_batches=8),
        data=mock_data(seq_length=2048, global_batch_size=128, micro_batch_size=1),
        log=log(name=name, dir=dir, every_n_train_steps=100),
        optim=finetune_optim(),
        resume=restore(checkpoint),
    )
