"""llama3_70b: Llama 3 70B (70.6e9 parameters) on 4 nodes of 8 GPUs, NeMo's default layout.

Pretraining: TP4 (+ sequence parallel) x PP4 with 5 virtual stages (4 layers each) x CP2 =
32 GPUs, one model replica; bf16, distributed optimizer, batch 512 x 8192, LR 3e-4.
Add nodes to add data-parallel replicas (num_nodes=8: DP2).
Fine-tuning: TP8 x PP4 on 4 nodes (NeMo's fine-tuning layout): LoRA (default) LR 1e-4, full LR 5e-6.
Target: 4 nodes x 8 H100 80GB, bf16.
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes import gpu
from recipes.gpu import GpuRecipe, Layout

NAME = "llama3_70b"
TARGET = "4 nodes x 8 H100 80GB, bf16"
SPEC = GpuRecipe(llm.LlamaModel, llm.Llama3Config70B,
                 pretrain=Layout(tp=4, pp=4, vpp=5, cp=2, sp=True),
                 finetune=Layout(tp=8, pp=4, sp=True))


def model() -> run.Config:
    return gpu.model(SPEC)


def trainer(num_nodes: int = 4, num_gpus_per_node: int = 8, **kwargs) -> run.Config:
    """This model's pretraining trainer; layout fields and Trainer arguments override."""
    return gpu.recipe_trainer(SPEC, num_nodes, num_gpus_per_node, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 4,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain Llama 3 70B from scratch (MockDataModule until pretraining data modules land)."""
    return gpu.pretrain(SPEC, name, dir, num_nodes, num_gpus_per_node)


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 4,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None,
                    peft_scheme: Optional[str] = "lora") -> run.Partial:
    """Fine-tuning from the weights of `checkpoint`: TP8 x PP4 (+ SP), 1000 steps of
    128 x 2048 tokens. `peft_scheme="lora"` (NeMo's default) or "dora": adapters (dim 8,
    alpha 16) on a frozen base, LR 1e-4; None: full fine-tuning, LR 5e-6.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line).
    """
    return gpu.finetune(SPEC, name, dir, num_nodes, num_gpus_per_node, checkpoint,
                        peft_scheme)
