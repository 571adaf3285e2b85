"""gpt_126m: GPT-3 Small (NeMo's GPTConfig126M, 125.2e6 parameters) on one node of 8 GPUs.

Data parallel only (TP1 PP1, DP8), bf16, distributed optimizer; the GPT-3 paper's recipe:
batch 256 x 2048 tokens (0.5M), LR 6e-4 -> 6e-5, 300B tokens. The model also fits one GPU:
`pretrain_recipe(num_gpus_per_node=1)` (the batch is then reached with more micro-batches).
Target: 1 node x 8 bf16 GPUs (A100 / H100).
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes import gpu
from recipes.gpu import GpuRecipe, Layout

NAME = "gpt_126m"
TARGET = "1 node x 8 GPUs (A100/H100), bf16"
TOKENS = 300_000_000_000  # GPT-3's training budget
GLOBAL_BATCH = 256
SPEC = GpuRecipe(llm.GPTModel, llm.GPTConfig126M, pretrain=Layout(), finetune=Layout(),
                 pretrain_seq=2048, pretrain_micro=4, pretrain_batch=GLOBAL_BATCH,
                 pretrain_steps=TOKENS // (GLOBAL_BATCH * 2048),
                 pretrain_optim={"lr": 6e-4, "min_lr": 6e-5, "warmup_steps": 715,
                                 "adam_eps": 1e-8},
                 finetune_micro=4, finetune_optim={"lr": 1e-5})


def model() -> run.Config:
    return gpu.model(SPEC)


def trainer(num_nodes: int = 1, num_gpus_per_node: int = 8, **kwargs) -> run.Config:
    """This model's pretraining trainer; layout fields and Trainer arguments override."""
    return gpu.recipe_trainer(SPEC, num_nodes, num_gpus_per_node, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain GPT-3 Small: 572K steps of 256 x 2048 tokens (300B), warmup 715 steps."""
    return gpu.pretrain(SPEC, name, dir, num_nodes, num_gpus_per_node)


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None,
                    peft_scheme: Optional[str] = "lora") -> run.Partial:
    """Fine-tuning from the weights of `checkpoint`, 1000 steps of 128 x 2048 tokens.
    `peft_scheme="lora"` (NeMo's default) or "dora": adapters (dim 8, alpha 16) on a frozen
    base, LR 1e-4; None: full fine-tuning, LR 1e-5.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line). The model
    keeps seq_length 2048 (its learned position table must match the checkpoint).
    """
    return gpu.finetune(SPEC, name, dir, num_nodes, num_gpus_per_node, checkpoint,
                        peft_scheme)
