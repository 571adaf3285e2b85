"""Trainer pieces: the parallel layout (strategy), precision, and the Trainer holding them.

Each returns a `nemo_run.Config`, so a recipe is data until it runs and any field can be
overridden first (`recipe.trainer.strategy.tensor_model_parallel_size = 2`).
"""

from typing import Any, Optional, Union

import nemo_run as run

from nemo_lite import lightning as nl


def gpu_ddp() -> run.Config:
    """Megatron DDP as NeMo's GPU recipes set it: fp32 gradient reduction, overlapped with
    backward (and the distributed optimizer's parameter all-gather with forward).

    Not averaged in the collective (NeMo sets average_in_collective=True): nemo_lite's models
    compute a per-token loss (gradients divided by the global token count), which megatron's
    DDP refuses to combine with averaging."""
    from megatron.core.distributed import DistributedDataParallelConfig

    return run.Config(
        DistributedDataParallelConfig,
        check_for_nan_in_grad=True,
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=True,
        overlap_param_gather=True,
        average_in_collective=False,
    )


def strategy(
    tp: int = 1,
    pp: int = 1,
    vpp: Optional[int] = None,
    cp: int = 1,
    sp: bool = False,
    ep: int = 1,
    etp: Optional[int] = None,
    ddp: Union[str, run.Config] = "megatron",
    **kwargs: Any,
) -> run.Config[nl.MegatronStrategy]:
    """The parallel layout: tensor, pipeline (+ virtual), context, sequence and expert parallel.

    The pipeline dtype is not set here: MegatronMixedPrecision sets it from the precision.
    Extra keyword arguments go to MegatronStrategy (e.g. ckpt_async_save=True).
    """
    return run.Config(
        nl.MegatronStrategy,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=vpp,
        context_parallel_size=cp,
        sequence_parallel=sp,
        expert_model_parallel_size=ep,
        expert_tensor_parallel_size=etp,
        ddp=ddp,
        **kwargs,
    )


def precision(setting: str = "bf16-mixed") -> run.Config[nl.MegatronMixedPrecision]:
    """"bf16-mixed" (GPUs), "16-mixed" (dynamic loss scaling) or "32" (CPU, parity tests)."""
    return run.Config(nl.MegatronMixedPrecision, precision=setting)


_precision = precision  # `trainer` takes a `precision` argument of the same name


def trainer(
    tp: int = 1,
    pp: int = 1,
    vpp: Optional[int] = None,
    cp: int = 1,
    sp: bool = False,
    ep: int = 1,
    num_nodes: int = 1,
    devices: int = 8,
    accelerator: str = "gpu",
    precision: str = "bf16-mixed",
    max_steps: int = 1_168_251,
    val_check_interval: Optional[int] = 2000,
    limit_val_batches: int = 32,
    limit_test_batches: int = 50,
    log_every_n_steps: int = 10,
    strategy_config: Optional[run.Config] = None,
    **kwargs: Any,
) -> run.Config[nl.Trainer]:
    """A Trainer config; the layout comes from `strategy_config` or else the parallel sizes.

    Defaults are NeMo's GPU pretraining ones (validation every 2000 steps on 32 global
    batches). Extra keyword arguments go to the Trainer (callbacks, enable_progress_bar...).
    """
    if strategy_config is None:
        gpu = accelerator == "gpu"
        strategy_config = strategy(
            tp=tp, pp=pp, vpp=vpp, cp=cp, sp=sp, ep=ep,
            ddp=gpu_ddp() if gpu else "megatron",
            **({"ckpt_async_save": True, "ckpt_parallel_load": True} if gpu else {}),
        )
    return run.Config(
        nl.Trainer,
        strategy=strategy_config,
        plugins=_precision(precision),
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        max_steps=max_steps,
        val_check_interval=val_check_interval,
        limit_val_batches=limit_val_batches,
        limit_test_batches=limit_test_batches,
        log_every_n_steps=log_every_n_steps,
        **kwargs,
    )
