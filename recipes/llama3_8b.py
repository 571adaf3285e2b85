"""llama3_8b: Llama 3 8B (8.03e9 parameters) on one node of 8 GPUs, NeMo's default layout.

Pretraining: TP1 PP1 CP2 (context parallel halves the 8192-token activations), DP4, bf16,
distributed optimizer, batch 512 x 8192 tokens, LR 3e-4 -> 3e-5 after 2000 warmup steps.
Fine-tuning: LoRA at TP1, LR 1e-4 (NeMo's default peft_scheme); full fine-tuning at TP2, LR 5e-6.
Target: 1 node x 8 H100 80GB (or A100 80GB), bf16.
"""

from typing import Optional

import nemo_run as run

from nemo_lite import llm
from recipes import gpu
from recipes.gpu import GpuRecipe, Layout

NAME = "llama3_8b"
TARGET = "1 node x 8 H100/A100 80GB, bf16"
SPEC = GpuRecipe(llm.LlamaModel, llm.Llama3Config8B, pretrain=Layout(cp=2),
                 finetune=Layout(tp=2), lora=Layout())


def model() -> run.Config:
    return gpu.model(SPEC)


def trainer(num_nodes: int = 1, num_gpus_per_node: int = 8, **kwargs) -> run.Config:
    """This model's pretraining trainer; layout fields and Trainer arguments override."""
    return gpu.recipe_trainer(SPEC, num_nodes, num_gpus_per_node, **kwargs)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8) -> run.Partial:
    """Pretrain Llama 3 8B from scratch (MockDataModule until pretraining data modules land)."""
    return gpu.pretrain(SPEC, name, dir, num_nodes, num_gpus_per_node)


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 1,
                    num_gpus_per_node: int = 8, checkpoint: Optional[str] = None,
                    peft_scheme: Optional[str] = "lora") -> run.Partial:
    """Fine-tuning from the weights of `checkpoint` (a nemo_lite checkpoint directory), 1000
    steps of 128 x 2048 tokens. `peft_scheme="lora"` (NeMo's default) or "dora": adapters
    (dim 8, alpha 16) on a frozen base, TP1, LR 1e-4; None: full fine-tuning, TP2, LR 5e-6.

    Data is MockDataModule; give real SFT data with `data=llm.FineTuningDataModule(...)` (or
    `data=finetuning_data` on the command line).
    """
    return gpu.finetune(SPEC, name, dir, num_nodes, num_gpus_per_node, checkpoint,
                        peft_scheme)
