"""llama3_8b: Llama 3 8B (8.03e9 parameters) on one node of 8 GPUs, NeMo's default layout.

Pretraining: TP1 PP1 CP2 (context parallel halves the 8192-token activations), DP4, bf16,
distributed optimizer, batch 512 x 8192 tokens, LR 3e-4 -> 3e-5 after 2000 warmup steps.
Fine-tuning: TP2 (full fine-tuning, as NeMo), LR 5e-6.
Target: 1 node x 8 H100 80GB (or A100 80GB), bf16.
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes.data import mock_data
from recipes.log import log, restore, resume
from recipes.optim import finetune_optim, optim
from recipes.trainer import trainer as base_trainer

NAME = "llama3_8b"
TARGET = "1 node x 8 H100/A100 80GB, bf16"


def model() -> run.Config[llm.LlamaModel]:
    return run.Config(llm.LlamaModel, config=run.Config(llm.Llama3Config8B))


def trainer(tp: int = 1, pp: int = 1, vpp: Optional[int] = None, cp: int = 2, sp: bool = False,
            num_nodes: int = 1, num_gpus_per_node: int = 8, max_steps: int = 1_168_251,
            **kwargs) -> run.Config:
    return base_trainer(tp=tp, pp=pp, vpp=vpp, cp=cp, sp=sp, num_nodes=num_nodes,
                        devices=num_gpus_per_node, max_steps=max_steps, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain Llama 3 8B from scratch (MockDataModule until pretraining data modules land)."""
    return run.Partial(
        llm.pretrain,
        model=model(),
        trainer=trainer(num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node),
        data=mock_data(seq_length=8192, global_batch_size=512, micro_batch_size=1),
        log=log(name=name, dir=dir),
        optim=optim(lr=3e-4),
        resume=resume(),
    )


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None) -> run.Partial:
    """Full fine-tuning from the weights of `checkpoint` (a nemo_lite checkpoint directory):
    TP2, 1000 steps of 128 x 2048 tokens, LR 5e-6.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line).
    """
    return run.Partial(
        llm.finetune,
        model=model(),
        trainer=trainer(tp=2, cp=1, num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node,
                        max_steps=1000, val_check_interval=100, limit_val_batches=8),
        data=mock_data(seq_length=2048, global_batch_size=128, micro_batch_size=1),
        log=log(name=name, dir=dir, every_n_train_steps=100),
        optim=finetune_optim(),
        resume=restore(checkpoint),
    )
