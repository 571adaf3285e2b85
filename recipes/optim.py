"""Optimizer piece: megatron's Adam with a warmup + cosine schedule (NeMo's
`distributed_fused_adam_with_cosine_annealing`, minus the fused kernel name).

bf16 / fp16 flags are left out of the OptimizerConfig on purpose: MegatronMixedPrecision
writes them from the trainer's precision, so the two cannot disagree.
"""

from typing import Optional

import nemo_run as run

from nemo_lite import lightning as nl


def optim(
    lr: float = 3e-4,
    min_lr: Optional[float] = None,
    warmup_steps: int = 2000,
    constant_steps: int = 0,
    weight_decay: float = 0.1,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.95,
    adam_eps: float = 1e-5,
    clip_grad: float = 1.0,
    distributed: bool = True,
    max_steps: Optional[int] = None,
) -> run.Config[nl.MegatronOptimizerModule]:
    """Adam(W) + cosine decay to `min_lr` (default lr / 10) after `warmup_steps`.

    distributed: megatron's distributed optimizer (optimizer state sharded over data-parallel
    ranks), on for GPU recipes. max_steps: the schedule's length (default: the trainer's).
    """
    from megatron.core.optimizer import OptimizerConfig

    config = run.Config(
        OptimizerConfig,
        optimizer="adam",
        lr=lr,
        weight_decay=weight_decay,
        adam_beta1=adam_beta1,
        adam_beta2=adam_beta2,
        adam_eps=adam_eps,
        clip_grad=clip_grad,
        use_distributed_optimizer=distributed,
    )
    schedule = run.Config(
        nl.CosineAnnealingScheduler,
        max_steps=max_steps,
        warmup_steps=warmup_steps,
        constant_steps=constant_steps,
        min_lr=lr / 10 if min_lr is None else min_lr,
    )
    return run.Config(nl.MegatronOptimizerModule, config=config, lr_scheduler=schedule)


def finetune_optim(lr: float = 5e-6, warmup_steps: int = 50,
                   distributed: bool = True) -> run.Config[nl.MegatronOptimizerModule]:
    """NeMo's full fine-tuning optimizer: small LR, short warmup, cosine to 0, beta2 0.98."""
    return optim(lr=lr, min_lr=0.0, warmup_steps=warmup_steps, adam_beta2=0.98,
                 distributed=distributed)
