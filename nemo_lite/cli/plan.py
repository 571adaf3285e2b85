"""What a resolved recipe will launch, checked before any process exists.

From the lazy config tree alone (strategy, trainer, model config, data), and the executor when
one is given: the world size and who decides it, the parallel layout checked against it, the
model shapes against TP/PP/CP/EP, the batch math, and a per-rank memory estimate. Only the
model's config dataclass is built (megatron's TransformerConfig), never the model.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from nemo_lite.lightning.batch_ramp import BatchRamp
from nemo_lite.lightning.ddp_rules import check_ddp
from nemo_lite.lightning.layout import LayoutError, ParallelLayout

_DATA_FIELDS = ("seq_length", "global_batch_size", "micro_batch_size", "rampup_batch_size")


@dataclass
class LaunchPlan:
    world_size: int
    launched_by: str
    layout: ParallelLayout
    num_microbatches: int
    memory: Any = None
    precision: str = "32"
    batch_ramp: str | None = None  # BatchRamp.describe() when the global batch ramps up

    def lines(self) -> list[str]:
        lay = self.layout
        sizes = (f"TP={lay.tensor_model_parallel_size} PP={lay.pipeline_model_parallel_size} "
                 f"VPP={lay.virtual_pipeline_model_parallel_size} "
                 f"CP={lay.context_parallel_size} EP={lay.expert_model_parallel_size} "
                 f"SP={lay.sequence_parallel} DP={lay.data_parallel_size(self.world_size)}")
        out = [f"ranks needed: {self.world_size} ({self.launched_by})",
               f"layout: {sizes}; {self.num_microbatches} micro-batches per step",
               *([f"batch ramp: {self.batch_ramp}"] if self.batch_ramp else []),
               f"precision: {self.precision}"]
        if self.memory is not None:
            out += ["memory per rank (estimate):", *("  " + line for line in self.memory.lines())]
        return out


def _value(config: Any, name: str, default: Any = None) -> Any:
    """A field of a fdl.Config (its default when unset) or of a plain object."""
    try:
        return getattr(config, name)
    except AttributeError:
        return default


def _trainer_world(trainer: Any) -> int:
    devices = _value(trainer, "devices", "auto")
    if isinstance(devices, (list, tuple)):
        devices = len(devices)
    elif devices in ("auto", -1, "-1", None):
        devices = 1
    return int(devices) * int(_value(trainer, "num_nodes", 1) or 1)


def _executor_world(executor: Any) -> tuple[int, str] | None:
    if executor is None:
        return None
    nodes = int(_value(executor, "nodes", 1) or 1)
    tasks = int(_value(executor, "ntasks_per_node", 1) or 1)
    nproc = _value(executor, "nproc_per_node", None)
    if callable(nproc):
        nproc = nproc()
    if nproc and _value(executor, "launcher", None) is not None:
        tasks = max(tasks, int(nproc))
    return nodes * tasks, f"{type(executor).__name__}: {nodes} node(s) x {tasks} process(es)"


def _vocab_size(model_config: Any, task: Any) -> int:
    """The model's vocabulary: its config's, else its tokenizer's, else the data module's
    (whose default is the byte tokenizer, as at run time)."""
    import fiddle as fdl

    if getattr(model_config, "vocab_size", None):
        return model_config.vocab_size
    for owner in (task.model, task.data):
        tokenizer = _value(owner, "tokenizer")
        if isinstance(tokenizer, fdl.Buildable):
            tokenizer = fdl.build(tokenizer)
        if getattr(tokenizer, "vocab_size", None):
            return tokenizer.vocab_size
    from nemo_lite.llm.tokenizer import ByteTokenizer

    return ByteTokenizer().vocab_size


def plan_task(task: Any, executor: Any = None, check_paths: bool = True) -> LaunchPlan:
    """Check a resolved `llm.pretrain / finetune / validate` Partial; raise LayoutError if it
    cannot run as configured (the message says what to change). With `check_paths` and no
    executor, a restore / resume checkpoint must exist here (a dry run plans without it)."""
    import fiddle as fdl

    trainer = task.trainer
    strategy = _value(trainer, "strategy")
    layout = ParallelLayout(**{f.name: _value(strategy, f.name, f.default)
                               for f in dataclasses.fields(ParallelLayout)})
    layout.validate_sizes()
    world = _trainer_world(trainer)
    launched_by = ("trainer.devices x trainer.num_nodes, launched in this process by "
                   "Lightning")
    executor_world = _executor_world(executor)
    if executor_world is not None:
        if executor_world[0] != world:
            raise LayoutError(
                f"the executor starts {executor_world[0]} processes ({executor_world[1]}) but "
                f"the trainer expects {world} (trainer.devices x trainer.num_nodes): make them "
                f"equal, e.g. trainer.devices={executor_world[0]} or set the executor's "
                "ntasks_per_node / nodes.")
        launched_by = executor_world[1]
    model_config = _value(task.model, "config")
    if isinstance(model_config, fdl.Buildable):
        with warnings.catch_warnings():  # megatron's import-time notes about TE / Apex
            warnings.simplefilter("ignore")
            model_config = fdl.build(model_config)
    data = task.data
    data_view = SimpleNamespace(**{k: _value(data, k) for k in _DATA_FIELDS})
    try:
        microbatches = layout.validate_run(world_size=world, model_config=model_config,
                                           data=data_view)
    except LayoutError as error:
        if executor_world is None and "world size" in str(error):
            raise LayoutError(
                f"{error} This recipe runs in this process with trainer.devices="
                f"{_value(trainer, 'devices')}: set trainer.devices (and trainer.num_nodes) to "
                "the ranks it needs, or launch it with an executor "
                "(run.executor=torchrun run.executor.ntasks_per_node=N).") from error
        raise
    if check_paths and executor is None:  # on this machine (an executor's may be elsewhere)
        _check_checkpoint_paths(task)
    optim = _value(task, "optim") or _value(task.model, "optim")
    optim_config = _value(optim, "config") if optim is not None else None
    check_ddp(_value(strategy, "ddp"), model_config, optim_config)
    plugins = _value(trainer, "plugins")
    plugins = plugins if isinstance(plugins, (list, tuple)) else [plugins]
    precision = next((_value(p, "precision") for p in plugins if p is not None
                      and _value(p, "precision") is not None), "32")
    distributed = bool(_value(optim_config, "use_distributed_optimizer", False))
    memory = None
    if model_config is not None and hasattr(model_config, "hidden_size"):
        from nemo_lite.llm.gpt.memory import estimate_memory

        memory = estimate_memory(
            model_config, tp=layout.tensor_model_parallel_size,
            pp=layout.pipeline_model_parallel_size, cp=layout.context_parallel_size,
            ep=layout.expert_model_parallel_size, etp=layout.expert_tensor_parallel_size,
            dp=layout.data_parallel_size(world),
            vpp=layout.virtual_pipeline_model_parallel_size,
            sequence_parallel=layout.sequence_parallel, precision=str(precision),
            distributed_optimizer=distributed, micro_batch_size=data_view.micro_batch_size or 1,
            seq_length=data_view.seq_length, num_microbatches=microbatches,
            vocab_size=_vocab_size(model_config, task),
            flash_attention=_value(trainer, "accelerator", "auto") not in ("cpu",),
            grad_reduce_in_fp32=bool(next((_value(p, "grad_reduce_in_fp32", True)
                                           for p in plugins if p is not None), True)),
            adapter_parameters=_adapter_parameters(task, model_config, layout))
    ramp = BatchRamp.parse(data_view.rampup_batch_size, data_view.global_batch_size)
    ramp_text = ramp.describe(data_view.micro_batch_size, layout.data_parallel_size(world)) \
        if ramp else None
    return LaunchPlan(world, launched_by, layout, microbatches, memory, str(precision), ramp_text)


def _check_checkpoint_paths(task: Any) -> None:
    """A restore or resume path that is not a complete nemo_lite checkpoint fails here, once,
    before any rank starts (each rank would otherwise report it)."""

    from nemo_lite.lightning.checkpoint_dir import CheckpointError, resolve_checkpoint_path
    from nemo_lite.lightning.checkpoint_io import checkpoint_problem

    resume = _value(task, "resume")
    restore = _value(resume, "restore_config") if resume is not None else None
    paths = {"resume.resume_from_path": _value(resume, "resume_from_path"),
             "resume.restore_config.path": _value(restore, "path") if restore is not None else None}
    for key, path in paths.items():
        if path:
            problem, _ = checkpoint_problem(resolve_checkpoint_path(str(path)))
            if problem:
                raise CheckpointError(f"{key}: {problem}")


def _adapter_parameters(task: Any, model_config: Any, layout: Any) -> int | None:
    """A LoRA / DoRA task's adapter parameters per rank (None: every parameter trains), after
    its settings are checked against the model and layout (`LoRA.check`, as every rank does)."""
    import fiddle as fdl

    from nemo_lite.llm.gpt.memory import adapter_parameters_per_rank

    peft = _value(task, "peft")
    if peft is None:
        return None
    peft = fdl.build(peft) if isinstance(peft, fdl.Buildable) else peft
    if not hasattr(peft, "check"):  # a model transform of the user's own
        return None
    tp = layout.tensor_model_parallel_size
    peft.check(model_config, tp, layout.expert_tensor_parallel_size)
    return adapter_parameters_per_rank(
        model_config, peft.dim, peft.target_modules, magnitude=type(peft).__name__ == "DoRA",
        tp=tp, pp=layout.pipeline_model_parallel_size, ep=layout.expert_model_parallel_size)
