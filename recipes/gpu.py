"""The GPU recipes as data: one `GpuRecipe` per model, two builders shared by all of them.

A model's recipe module (gpt_126m.py, llama3_8b.py, ...) holds its `GpuRecipe` (the model, the
pretraining and fine-tuning layouts, nodes, batch and learning rates) and NeMo's function
signatures (`pretrain_recipe(name, dir, num_nodes, num_gpus_per_node)`,
`finetune_recipe(..., checkpoint)`), which call `pretrain` / `finetune` below. Every piece is a
`nemo_run.Config` built by the shared factories (trainer, data, log, optim).
"""

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Optional

import nemo_run as run

from nemo_lite import llm
from recipes.data import mock_data
from recipes.log import log, restore, resume
from recipes.optim import finetune_optim, optim
from recipes.trainer import trainer as base_trainer


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    vpp: Optional[int] = None
    cp: int = 1
    sp: bool = False
    ep: int = 1


@dataclass(frozen=True)
class GpuRecipe:
    model: Any  # an llm model class (llm.LlamaModel...)
    config: Any  # its config class (llm.Llama3Config8B...)
    pretrain: Layout
    finetune: Layout
    pretrain_seq: int = 8192
    pretrain_micro: int = 1
    pretrain_batch: int = 512
    pretrain_steps: int = 1_168_251
    pretrain_optim: dict[str, Any] = field(default_factory=lambda: {"lr": 3e-4})
    finetune_micro: int = 1
    finetune_optim: dict[str, Any] = field(default_factory=dict)
    lora: Optional[Layout] = None  # the LoRA / DoRA fine-tuning layout (None: `finetune`'s)


def model(spec: GpuRecipe) -> run.Config:
    return run.Config(spec.model, config=run.Config(spec.config))


def trainer(layout: Layout, num_nodes: int, num_gpus_per_node: int, max_steps: int,
            **kwargs: Any) -> run.Config:
    return base_trainer(**asdict(layout), num_nodes=num_nodes, devices=num_gpus_per_node,
                        max_steps=max_steps, **kwargs)


def recipe_trainer(spec: GpuRecipe, num_nodes: int, num_gpus_per_node: int = 8,
                   **kwargs: Any) -> run.Config:
    """A model module's `trainer(...)`: its pretraining layout and steps as defaults; layout
    fields (tp, pp, vpp, cp, sp, ep) and Trainer arguments in `kwargs` override them."""
    layout = replace(spec.pretrain, **{f.name: kwargs.pop(f.name) for f in fields(Layout)
                                       if f.name in kwargs})
    return trainer(layout, num_nodes, num_gpus_per_node,
                   kwargs.pop("max_steps", spec.pretrain_steps), **kwargs)


def pretrain(spec: GpuRecipe, name: str, dir: Optional[str], num_nodes: int,
             num_gpus_per_node: int) -> run.Partial:
    return run.Partial(
        llm.pretrain,
        model=model(spec),
        trainer=trainer(spec.pretrain, num_nodes, num_gpus_per_node, spec.pretrain_steps),
        data=mock_data(seq_length=spec.pretrain_seq, global_batch_size=spec.pretrain_batch,
                       micro_batch_size=spec.pretrain_micro),
        log=log(name=name, dir=dir),
        optim=optim(**spec.pretrain_optim),
        resume=resume(),
    )


PEFT_SCHEMES = {"lora": "LoRA", "dora": "DoRA"}  # NeMo's peft_scheme names -> llm.peft classes
PEFT_LR = 1e-4  # NeMo's LoRA / DoRA fine-tuning LR


def peft_config(peft_scheme: Optional[str]) -> Optional[run.Config]:
    """`peft_scheme` ("lora", "dora", None / "none": full fine-tuning) as NeMo's adapter config:
    dim 8, alpha 16 on the attention and MLP linears (MoE experts included)."""
    if peft_scheme is None or str(peft_scheme).lower() == "none":
        return None
    cls = PEFT_SCHEMES.get(str(peft_scheme).lower())
    if cls is None:
        raise ValueError(f"peft_scheme={peft_scheme!r}: use 'lora', 'dora' or None (full "
                         "fine-tuning).")
    from nemo_lite.llm import peft

    return run.Config(getattr(peft, cls), dim=8, alpha=16)


def finetune(spec: GpuRecipe, name: str, dir: Optional[str], num_nodes: int,
             num_gpus_per_node: int, checkpoint: Optional[str],
             peft_scheme: Optional[str] = "lora") -> run.Partial:
    """Fine-tuning from `checkpoint`'s weights: 1000 steps of 128 x 2048 tokens, validation
    every 100 steps, MockDataModule unless `data=` is given. `peft_scheme` "lora" / "dora"
    (NeMo's default is LoRA): adapters only, LR 1e-4, in the recipe's LoRA layout; None: full
    fine-tuning in its fine-tuning layout."""
    peft = peft_config(peft_scheme)
    layout = spec.finetune if peft is None else (spec.lora or spec.finetune)
    optim_args = dict(spec.finetune_optim)
    if peft is not None:
        optim_args["lr"] = PEFT_LR
    return run.Partial(
        llm.finetune,
        model=model(spec),
        trainer=trainer(layout, num_nodes, num_gpus_per_node, 1000,
                        val_check_interval=100, limit_val_batches=8),
        data=mock_data(seq_length=2048, global_batch_size=128,
                       micro_batch_size=spec.finetune_micro),
        log=log(name=name, dir=dir, every_n_train_steps=100),
        optim=finetune_optim(**optim_args),
        resume=restore(checkpoint),
        peft=peft,
    )
