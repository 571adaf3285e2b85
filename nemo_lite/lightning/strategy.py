"""MegatronStrategy: a Lightning strategy whose model is split and trained the Megatron way.

What it adds to Lightning's DDPStrategy (which launches processes and owns the world group):
- megatron's process groups (`parallel_state`) for TP/PP/VPP/CP/EP, the RNG tracker seed,
  and the CPU shims when no GPU is used;
- the parallel sizes and precision written into the model's TransformerConfig before
  `configure_model()` builds this rank's chunks;
- the chunks wrapped in megatron's Float16Module (bf16/fp16) and DistributedDataParallel,
  held by `MegatronParallel`, which runs the forward-backward schedule for every
  training / validation / test step.
The layout is validated before any group or model is built.
"""

import logging
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Optional, Union

import torch
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.trainer.states import TrainerFn

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.checkpoint_io import (
    MegatronCheckpointIO,
    load_model_weights,
)
from nemo_lite.lightning.checkpointing import Checkpointer, CheckpointOptions
from nemo_lite.lightning.ddp_rules import check_ddp
from nemo_lite.lightning.ddp_setup import (
    connect_to_schedule,
    final_ddp_config,
    finish_param_gather,
    user_ddp_config,
    wrap_in_ddp,
)
from nemo_lite.lightning.device import is_cuda
from nemo_lite.lightning.elastic_store import RESTART_ROUND_STORE
from nemo_lite.lightning.ignored_options import warn_ignored_strategy_options
from nemo_lite.lightning.layout import ParallelLayout
from nemo_lite.lightning.megatron_setup import init_parallel_state, write_model_config
from nemo_lite.lightning.parallel import MegatronParallel
from nemo_lite.lightning.precision import as_megatron_precision
from nemo_lite.lightning.progress import use_printed_progress
from nemo_lite.lightning.sampler import EvalLimits, count_eval_limits_in_global_batches
from nemo_lite.lightning.step_metrics import add_step_metrics
from nemo_lite.lightning.strategy_checkpoints import CheckpointHooks

log = logging.getLogger(__name__)


class MegatronStrategy(CheckpointHooks, DDPStrategy, IOMixin):
    strategy_name = "megatron"

    def __init__(
        self,
        tensor_model_parallel_size: int = 1,
        pipeline_model_parallel_size: int = 1,
        virtual_pipeline_model_parallel_size: Optional[int] = None,
        microbatch_group_size_per_vp_stage: Optional[int] = None,
        context_parallel_size: int = 1,
        sequence_parallel: bool = False,
        expert_model_parallel_size: int = 1,
        expert_tensor_parallel_size: Optional[int] = None,
        parallel_devices: Optional[list[torch.device]] = None,
        cluster_environment: Any = None,
        checkpoint_io: Any = None,
        find_unused_parameters: bool = False,
        ckpt_load_optimizer: bool = True,
        ckpt_save_optimizer: bool = True,
        ddp: Union[str, Any] = "megatron",
        lazy_init: bool = False,
        pipeline_dtype: Optional[torch.dtype] = None,
        use_te_rng_tracker: bool = False,
        save_ckpt_format: str = "torch_dist",
        ckpt_async_save: bool = False,
        ckpt_torch_dist_multiproc: Optional[int] = None,
        ckpt_assume_constant_structure: bool = False,
        ckpt_parallel_save: bool = True,
        ckpt_parallel_save_within_dp: bool = True,
        ckpt_parallel_load: bool = False,
        ckpt_parallel_save_optim: bool = True,
        ckpt_load_directly_on_device: bool = True,
        ckpt_load_strictness: Optional[str] = None,
        ckpt_optim_fully_reshardable: bool = False,
        ckpt_verify_checksums: bool = True,
        setup_optimizers: bool = True,
        init_model_parallel: bool = True,
        replace_progress_bar: bool = True,
        progress_interval: int = 1,
        restore_config: Any = None,
        seed: int = 1234,
        timeout: Optional[timedelta] = timedelta(minutes=30),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            find_unused_parameters=find_unused_parameters,
            timeout=timeout,
            **kwargs,
        )
        ignored = sorted(set(self._ddp_kwargs) - {"find_unused_parameters"})
        if ignored:  # they would go to torch DDP, which megatron's DDP replaces here
            warnings.warn(f"MegatronStrategy ignores {ignored}: nemo_lite does not implement "
                          "these (torch DDP / NeMo) options.", stacklevel=2)
        self.layout = ParallelLayout(
            tensor_model_parallel_size=tensor_model_parallel_size,
            pipeline_model_parallel_size=pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size=virtual_pipeline_model_parallel_size,
            context_parallel_size=context_parallel_size,
            sequence_parallel=sequence_parallel,
            expert_model_parallel_size=expert_model_parallel_size,
            expert_tensor_parallel_size=expert_tensor_parallel_size,
        )
        self.layout.validate_sizes()
        self.replace_progress_bar = replace_progress_bar
        self.progress_interval = progress_interval
        self.microbatch_group_size_per_vp_stage = microbatch_group_size_per_vp_stage
        self.ddp = ddp  # the user's argument, as given ("megatron" or a megatron DDP config)
        self._ddp_overrides: dict[str, Any] = {}  # fields set through override_ddp()
        self._wrapped_ddp: Any = None  # the DDP config the model was wrapped with (setup)
        self.pipeline_dtype = pipeline_dtype
        self.use_te_rng_tracker = use_te_rng_tracker
        self.seed = seed
        self.should_setup_optimizers = setup_optimizers
        self.init_model_parallel = init_model_parallel
        self.restore_config = restore_config
        # the trainer's eval limits in steps, as the user gave them (kept at the first setup)
        self.eval_limits: Optional[EvalLimits] = None
        self.ckpt_async_save = ckpt_async_save
        self.checkpoint_options = CheckpointOptions(
            save_optimizer=ckpt_save_optimizer, load_optimizer=ckpt_load_optimizer,
            optim_fully_reshardable=ckpt_optim_fully_reshardable)
        self.checkpointer: Checkpointer | None = None  # made at setup, on the final checkpoint_io
        if checkpoint_io is None:  # NeMo's ckpt_* names -> MegatronCheckpointIO's
            self.checkpoint_io = MegatronCheckpointIO(
                save_ckpt_format=save_ckpt_format, parallel_save=ckpt_parallel_save,
                parallel_load=ckpt_parallel_load, verify_checksums=ckpt_verify_checksums,
                load_strictness=ckpt_load_strictness, async_save=ckpt_async_save,
                thread_count=ckpt_torch_dist_multiproc,
                assume_constant_structure=ckpt_assume_constant_structure,
                parallel_save_within_dp=ckpt_parallel_save_within_dp)
        warn_ignored_strategy_options(lazy_init=lazy_init,
                                      ckpt_parallel_save_optim=ckpt_parallel_save_optim,
                                      ckpt_load_directly_on_device=ckpt_load_directly_on_device)
        self.megatron_parallel: MegatronParallel | None = None
        self.num_microbatches = 1  # per step at the full global batch (validation, test)
        self.global_batch_size = 1
        self.batch_ramp: Any = None  # the data module's BatchRamp, if it ramps up
        self.step_global_batch_size = 1  # the global batch of the latest training step
        self.micro_batch_size = 1
        self.seq_length = 1

    @property
    def uses_cuda(self) -> bool:
        return is_cuda(self.root_device)

    # --- environment: process groups, megatron state, config --------------------------------
    def _configure_launcher(self) -> None:
        """No launcher for one process: Lightning's script launcher would start nothing, and it
        refuses interactive sessions (a notebook kernel can then train one rank in place)."""
        super()._configure_launcher()
        if (self.num_processes * self.num_nodes == 1
                and not self.cluster_environment.creates_processes_externally):
            self._launcher = None

    def setup_environment(self) -> None:
        self.precision_plugin = as_megatron_precision(self.precision_plugin)
        module = self.lightning_module
        self.validate_run(module, getattr(getattr(module, "_trainer", None), "datamodule", None))
        with RESTART_ROUND_STORE.applied():  # Lightning: device + torch.distributed world group
            super().setup_environment()
        if self.init_model_parallel:
            init_parallel_state(self.layout, seed=self.seed, on_cuda=self.uses_cuda,
                                te_rng_tracker=self.use_te_rng_tracker)
        self._configure_model_config()

    @property
    def world_size_requested(self) -> int:
        return self.num_nodes * self.num_processes

    def validate_run(self, model: Any, datamodule: Any = None) -> None:
        """Check layout vs world size, model shapes and batch sizes; no process is needed.

        `nl.Trainer.fit` calls this before Lightning launches any rank, and
        `setup_environment` again on every rank (a torchrun launch skips the former).
        """
        data = datamodule
        self.num_microbatches = self.layout.validate_run(
            world_size=self.world_size_requested,
            model_config=getattr(model, "config", None),
            data=data,
        )
        optim_config = getattr(getattr(model, "optim", None), "config", None)
        check_ddp(self.ddp, getattr(model, "config", None), optim_config)
        if data is not None:
            self.global_batch_size = data.global_batch_size
            self.micro_batch_size = data.micro_batch_size
            self.seq_length = data.seq_length
            self.batch_ramp = getattr(data, "batch_ramp", None)  # checked by validate_run
            self.step_global_batch_size = self.global_batch_size

    def _configure_model_config(self) -> None:
        config = getattr(self.lightning_module, "config", None)
        if config is not None:
            write_model_config(config, self.layout, self.precision_plugin, on_cuda=self.uses_cuda,
                               pipeline_dtype=self.pipeline_dtype,
                               microbatch_group_size=self.microbatch_group_size_per_vp_stage)

    # --- model wrapping and optimizers -------------------------------------------------------
    def setup(self, trainer: Any) -> None:
        self.accelerator.setup(trainer)
        module = self.lightning_module
        if getattr(module, "module", None) is None:
            module.configure_model()
        if trainer.gradient_clip_val:
            raise ValueError(
                "Trainer(gradient_clip_val=...) is not used by MegatronStrategy: gradient "
                "clipping lives in megatron's optimizer; set OptimizerConfig(clip_grad=...)."
            )
        fitting = trainer.state.fn == TrainerFn.FITTING
        self.eval_limits = count_eval_limits_in_global_batches(trainer, self.num_microbatches,
                                                               self.eval_limits)
        add_step_metrics(trainer)
        if self.replace_progress_bar:
            use_printed_progress(trainer, self.progress_interval)
        chunks = [chunk.to(self.root_device) for chunk in module.module]
        config = module.config
        if self.precision_plugin.is_half:
            from megatron.core.transformer.module import Float16Module

            chunks = [Float16Module(config, chunk) for chunk in chunks]
        if fitting:
            chunks = self._wrap_ddp(chunks, config, module)
        self.megatron_parallel = MegatronParallel(chunks)
        self.model = self.megatron_parallel
        self.checkpointer = Checkpointer(self.checkpoint_io, self.checkpoint_options)
        if self.restore_config is not None and self.restore_config.load_model_state:
            # Before the optimizer exists: its fp32 main params are copies of these weights.
            load_model_weights(chunks, self.restore_config.path)
        if fitting and self.should_setup_optimizers:
            self.precision_plugin.configure_optimizer(module.optim.config)
            self.setup_optimizers(trainer)
            connect_to_schedule(config, self.optimizers[0], list(self.megatron_parallel),
                                self.ddp_config)
            if self.restore_config is not None and self.restore_config.load_optim_state:
                self.checkpointer.restore_optimizer_state(
                    self.restore_config.path, chunks=chunks, optimizers=self.optimizers,
                    ddp_config=self.ddp_config, layout_record=self.layout_record())

    def _wrap_ddp(self, chunks: list[torch.nn.Module], config: Any, module: Any) -> list[Any]:
        optim_config = getattr(getattr(module, "optim", None), "config", None)
        ddp = final_ddp_config(self.megatron_ddp_config(), optim_config, self.precision_plugin)
        self._wrapped_ddp = ddp
        return wrap_in_ddp(chunks, config, ddp)

    def megatron_ddp_config(self) -> Any:
        """The user's DDP config as megatron's dataclass, with the fields callbacks set through
        `override_ddp`; a new object."""
        return user_ddp_config(self.ddp, self._ddp_overrides)

    def override_ddp(self, **fields: Any) -> None:
        """Set DDP config fields before the model is wrapped (the comm-overlap callback's plan)."""
        if self._wrapped_ddp is not None:
            raise RuntimeError("override_ddp after the model was wrapped in DDP has no effect: "
                               "call it from a callback's setup().")
        self._ddp_overrides.update(fields)

    @property
    def ddp_config(self) -> Any:
        """The DDP config the model was wrapped with (after setup); before: what it will be."""
        return self._wrapped_ddp if self._wrapped_ddp is not None else self.megatron_ddp_config()

    # (checkpoints: Lightning's hooks are in strategy_checkpoints.CheckpointHooks)
    def _finish_param_gather(self) -> None:
        finish_param_gather(self.megatron_parallel or [])

    def model_to_device(self) -> None:
        if self.megatron_parallel is not None:
            self.megatron_parallel.to(self.root_device)

    # --- steps: every Lightning step is one global batch through Megatron's schedule --------
    def megatron_step(self, dataloader_iter: Iterator[Any], forward_only: bool,
                      consumed_samples: Optional[int] = None) -> torch.Tensor:
        """One global batch through megatron's schedule, pulling its micro-batches from
        `dataloader_iter`. A training step under a ramp-up batch size takes the ramp's global
        batch at `consumed_samples` (the samples before this step); every other step takes
        `global_batch_size`."""
        num_microbatches = self.num_microbatches
        if not forward_only and self.batch_ramp is not None:
            if consumed_samples is None:
                raise ValueError("a ramp-up batch size needs the step's consumed_samples.")
            self.step_global_batch_size = self.batch_ramp.global_batch_at(consumed_samples)
            num_microbatches = self.num_microbatches * self.step_global_batch_size // \
                self.global_batch_size
        module = self.lightning_module
        parallel = self.megatron_parallel
        if parallel is None:
            raise RuntimeError("MegatronStrategy.setup() has not run: no model to step.")
        if forward_only:
            reduction = module.validation_loss_reduction
        else:
            reduction = module.training_loss_reduction
            for chunk in parallel:
                chunk.zero_grad_buffer()
            for optimizer in self.optimizers:
                optimizer.zero_megatron_grads()
        return parallel(
            dataloader_iter,
            forward_only=forward_only,
            num_microbatches=num_microbatches,
            seq_length=self.seq_length,
            micro_batch_size=self.micro_batch_size,
            data_step=module.data_step,
            forward_step=module.forward_step,
            loss_reduction=reduction,
        )

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.train_step_context():
            return self.lightning_module.training_step(*args, **kwargs)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.val_step_context():
            return self.lightning_module.validation_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        with self.precision_plugin.test_step_context():
            return self.lightning_module.test_step(*args, **kwargs)

    def backward(self, closure_loss: torch.Tensor, optimizer: Any, *args: Any, **kwargs: Any):
        """Megatron's schedule already ran backward inside the step: nothing left to do."""
        return closure_loss

    def teardown(self) -> None:
        super().teardown()
        try:
            from megatron.core import parallel_state

            parallel_state.destroy_model_parallel()
        except Exception as error:  # teardown must not hide the run's own error
            log.debug("destroy_model_parallel failed: %s", error)


# Parallel sizes under NeMo's attribute names (read-only views of the layout).
for _size in ("tensor_model_parallel_size", "pipeline_model_parallel_size",
              "virtual_pipeline_model_parallel_size", "context_parallel_size", "sequence_parallel",
              "expert_model_parallel_size"):
    setattr(MegatronStrategy, _size, property(lambda self, _name=_size: getattr(self.layout, _name)))
