"""mixtral_8x7b: Mixtral 8x7B (46.7e9 parameters, 12.9e9 active) on 8 nodes of 8 GPUs.

Pretraining, NeMo's layout: TP1 x PP4 with 8 virtual stages (one layer each), experts spread
8 ways (EP8: one expert per GPU), DP16; bf16, distributed optimizer, batch 512 x 4096 tokens,
LR 3e-4.
Fine-tuning: PP4 x EP8 on 4 nodes (32 GPUs: each GPU holds one expert of 8 layers): LoRA
(default) LR 1e-4, full LR 5e-6.
Target: 8 nodes x 8 H100 80GB, bf16.
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes import gpu
from recipes.gpu import GpuRecipe, Layout

NAME = "mixtral_8x7b"
TARGET = "8 nodes x 8 H100 80GB, bf16"
SPEC = GpuRecipe(llm.MixtralModel, llm.MixtralConfig8x7B,
                 pretrain=Layout(pp=4, vpp=8, ep=8), finetune=Layout(pp=4, ep=8),
                 pretrain_seq=4096)


def model() -> run.Config:
    return gpu.model(SPEC)


def trainer(num_nodes: int = 8, num_gpus_per_node: int = 8, **kwargs) -> run.Config:
    """This model's pretraining trainer; layout fields and Trainer arguments override."""
    return gpu.recipe_trainer(SPEC, num_nodes, num_gpus_per_node, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 8,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain Mixtral 8x7B from scratch (MockDataModule until pretraining data modules land)."""
    return gpu.pretrain(SPEC, name, dir, num_nodes, num_gpus_per_node)


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 4,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None,
                    peft_scheme: Optional[str] = "lora") -> run.Partial:
    """Fine-tuning from the weights of `checkpoint`: PP4 x EP8, 1000 steps of 128 x 2048
    tokens. `peft_scheme="lora"` (NeMo's default) or "dora": adapters (dim 8, alpha 16) on
    the attention linears and every expert's, frozen base, LR 1e-4; None: full fine-tuning,
    LR 5e-6.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line).
    """
    return gpu.finetune(SPEC, name, dir, num_nodes, num_gpus_per_node, checkpoint,
                        peft_scheme)
