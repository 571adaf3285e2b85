"""tiny_gpt: a 4-layer GPT that trains on a laptop CPU in seconds (TP=2 over 2 CPU ranks).

The README's first job: `nemo llm pretrain --factory tiny_gpt trainer.max_steps=20 -y`.
Same model, data and optimizer as examples/pretrain_tiny.py (loss falls from about 6.2 to
4.6 in 30 steps). Target: any CPU with 2 cores; fp32.
"""

from typing import Any, Optional

import nemo_run as run

from nemo_lite import llm
from recipes.data import mock_data
from recipes.log import log, restore, resume
from recipes.optim import optim
from recipes.trainer import trainer as base_trainer

NAME = "tiny_gpt"
TARGET = "CPU: 2 ranks (gloo), fp32"


def model() -> run.Config[llm.GPTModel]:
    """4 layers, hidden 64, 4 heads, seq 64. The vocabulary comes from the data module's
    tokenizer (bytes: 258 ids, padded to 512 for TP=2), as in examples/pretrain_tiny.py."""
    config = run.Config(llm.GPTConfig, num_layers=4, hidden_size=64, num_attention_heads=4,
                        seq_length=64, hidden_dropout=0.0, attention_dropout=0.0)
    return run.Config(llm.GPTModel, config=config)


def trainer(tp: int = 2, pp: int = 1, num_nodes: int = 1, devices: int = 2,
            max_steps: int = 30) -> run.Config:
    """CPU ranks, fp32, no validation; the loss is on the progress bar every step."""
    return base_trainer(tp=tp, pp=pp, num_nodes=num_nodes, devices=devices, accelerator="cpu",
                        precision="32", max_steps=max_steps, val_check_interval=None,
                        limit_val_batches=0, limit_test_batches=0, log_every_n_steps=1)


def synthetic_data() -> run.Config[llm.MockDataModule]:
    return mock_data(seq_length=64, global_batch_size=8, micro_batch_size=2)


def pretrain_recipe(name: str = "default", dir: Optional[str] = None, num_nodes: int = 1,
                    devices: int = 2, num_gpus_per_node: Optional[int] = None,
                    data: Any = None) -> run.Partial:
    """Pretrain tiny_gpt from scratch on CPU; checkpoints every 10 steps under
    `<dir>/<name>/checkpoints`, and a rerun continues from the newest one.
    `num_gpus_per_node` (the other recipes' name) is accepted as the number of CPU ranks.
    `data`: a data module Config (e.g. `recipes.data.pretraining_data(...)` over megatron
    .bin/.idx files); default synthetic tokens."""
    devices = num_gpus_per_node or devices
    return run.Partial(
        llm.pretrain,
        model=model(),
        trainer=trainer(num_nodes=num_nodes, devices=devices),
        data=data if data is not None else synthetic_data(),
        log=log(name=name, dir=dir, every_n_train_steps=10, save_top_k=2),
        optim=optim(lr=3e-3, min_lr=3e-4, warmup_steps=3, weight_decay=0.01, adam_beta2=0.999,
                    adam_eps=1e-8, distributed=False),
        resume=resume(),
    )


def finetune_recipe(name: str = "finetune", dir: Optional[str] = None, num_nodes: int = 1,
                    devices: int = 2, checkpoint: Optional[str] = None,
                    num_gpus_per_node: Optional[int] = None, peft_scheme: Optional[str] = "lora",
                    dataset_root: Optional[str] = None, packed_sequence: bool = False) -> run.Partial:
    """Fine-tune tiny_gpt from the weights of `checkpoint` (e.g. a pretrain_recipe checkpoint
    directory) for 10 steps.

    - `peft_scheme="lora"` (default, NeMo's argument): LoRA adapters (dim 8, alpha 16) on the
      attention and MLP linears, base weights frozen, only adapters trained and checkpointed;
      None: full fine-tuning with a 10x smaller LR than pretraining.
    - `dataset_root`: a directory with training.jsonl / validation.jsonl (prompt/answer or chat
      lines, loss on answers only; `packed_sequence=True` packs them into rows); without it,
      synthetic tokens.

    The default run name differs from pretraining's so that AutoResume does not pick up the
    pretraining run's own checkpoints.
    """
    if peft_scheme not in ("lora", None):
        raise ValueError(f"peft_scheme={peft_scheme!r}: use 'lora' or None (full fine-tuning).")
    devices = num_gpus_per_node or devices
    if dataset_root:
        from recipes.sft_data import finetuning_data

        data = finetuning_data(dataset_root=dataset_root, seq_length=64, global_batch_size=8,
                               micro_batch_size=1 if packed_sequence else 2,
                               packed_sequence=packed_sequence)
    else:
        data = synthetic_data()
    peft = None
    if peft_scheme == "lora":
        from nemo_lite.llm.peft import LoRA

        peft = run.Config(LoRA, dim=8, alpha=16)
    lr = 1e-3 if peft is not None else 3e-4
    return run.Partial(
        llm.finetune,
        model=model(),
        trainer=trainer(num_nodes=num_nodes, devices=devices, max_steps=10),
        data=data,
        log=log(name=name, dir=dir, every_n_train_steps=10, save_top_k=1),
        optim=optim(lr=lr, min_lr=lr / 10, warmup_steps=2, weight_decay=0.01, adam_beta2=0.999,
                    adam_eps=1e-8, distributed=False),
        resume=restore(checkpoint),
        peft=peft,
    )
