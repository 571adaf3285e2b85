"""What MegatronStrategy sets up in megatron before the model is built, as plain functions of
the layout: the process groups and RNG (`init_parallel_state`), and the parallel sizes and
precision written into the model's TransformerConfig (`write_model_config`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from nemo_lite.lightning.layout import ParallelLayout


def init_parallel_state(layout: ParallelLayout, *, seed: int, on_cuda: bool,
                        te_rng_tracker: bool = False) -> None:
    """megatron's parallel_state for `layout` (re-made if one exists), the CPU shims when the
    run computes on the CPU, and the model-parallel RNG seed."""
    from megatron.core import parallel_state, tensor_parallel

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor_model_parallel_size,
        pipeline_model_parallel_size=layout.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=layout.virtual_pipeline_model_parallel_size,
        context_parallel_size=layout.context_parallel_size,
        expert_model_parallel_size=layout.expert_model_parallel_size,
        expert_tensor_parallel_size=layout.expert_tensor_parallel_size,
    )
    from nemo_lite.lightning.writer_queue import CHECKPOINT_RESULTS_QUEUE_FORKED

    CHECKPOINT_RESULTS_QUEUE_FORKED.install()
    if not on_cuda:
        from nemo_lite.lightning import _cpu
        from nemo_lite.lightning.quiet import quiet_cpu_run

        _cpu.apply()
        quiet_cpu_run()
    tensor_parallel.model_parallel_cuda_manual_seed(seed, te_rng_tracker=te_rng_tracker and on_cuda)


def write_model_config(config: Any, layout: ParallelLayout, precision: Any, *, on_cuda: bool,
                       pipeline_dtype: Any = None,
                       microbatch_group_size: int | None = None) -> None:
    """The layout's sizes, the precision plugin's dtypes and the CPU's settings into `config`
    (a megatron TransformerConfig), before `configure_model` builds the chunks."""
    for field in dataclasses.fields(ParallelLayout):
        setattr(config, field.name, getattr(layout, field.name))
    config.expert_tensor_parallel_size = (
        layout.expert_tensor_parallel_size or layout.tensor_model_parallel_size)
    if microbatch_group_size is not None:
        config.microbatch_group_size_per_vp_stage = microbatch_group_size
    elif layout.virtual_pipeline_model_parallel_size:
        config.microbatch_group_size_per_vp_stage = layout.pipeline_model_parallel_size
    precision.configure_model(config)
    if pipeline_dtype is not None:
        config.pipeline_dtype = pipeline_dtype
    if not on_cuda:
        # Batched p2p on gloo gives wrong gradients with the interleaved schedule
        # (platform notes: grad norm 14.5 vs 1.17), and needs torch.cuda.synchronize.
        config.batch_p2p_comm = False
        config.use_cpu_initialization = True
