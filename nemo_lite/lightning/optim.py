"""Megatron's optimizer and LR schedule, presented to Lightning as one torch Optimizer.

`MegatronOptimizerModule(config=OptimizerConfig(...), lr_scheduler=CosineAnnealingScheduler(...))`
is NeMo 2.0's API. The optimizer is megatron's (distributed or not, fp32 main params, loss
scaling, gradient clipping from `config.clip_grad`); the schedule is megatron's
OptimizerParamScheduler, stepped once per optimizer step.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.ignored_options import warn_if_set
from nemo_lite.lightning.shims import ScopedPatch


@dataclass
class CosineAnnealingScheduler:
    """Linear warmup, optional constant hold, then cosine decay to `min_lr` at `max_steps`."""

    max_steps: Optional[int] = None
    warmup_steps: int = 0
    constant_steps: int = 0
    min_lr: float = 0.0
    decay_style: str = "cosine"
    # NeMo 2.0's Lightning-scheduler fields, accepted for its scripts; the schedule always
    # steps once per optimizer step here.
    interval: str = "step"
    frequency: int = 1
    monitor: str = "val_loss"

    def __post_init__(self) -> None:
        why = "megatron's schedule steps once per optimizer step"
        warn_if_set(type(self).__name__, "interval", self.interval, "step", why)
        warn_if_set(type(self).__name__, "frequency", self.frequency, 1, why)
        warn_if_set(type(self).__name__, "monitor", self.monitor, "val_loss",
                    "the schedule follows the step count, not a metric")

    def build(self, optimizer: Any, max_lr: float, max_steps: int, weight_decay: float):
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

        total = self.max_steps or max_steps
        if total is None or total <= 0:
            raise ValueError(
                "CosineAnnealingScheduler needs max_steps: set it, or set trainer max_steps."
            )
        return OptimizerParamScheduler(
            optimizer,
            init_lr=0.0 if self.warmup_steps else max_lr,
            max_lr=max_lr,
            min_lr=self.min_lr,
            lr_warmup_steps=self.warmup_steps,
            lr_decay_steps=max(total - self.constant_steps, self.warmup_steps + 1),
            lr_decay_style=self.decay_style,
            start_wd=weight_decay,
            end_wd=weight_decay,
            wd_incr_steps=total,
            wd_incr_style="constant",
        )


@dataclass
class WarmupAnnealingScheduler(CosineAnnealingScheduler):
    decay_style: str = "linear"


class MegatronOptimizerModule(IOMixin):
    """Builds megatron's optimizer (and schedule) for the DDP-wrapped model chunks."""

    def __init__(
        self,
        config: Any = None,
        lr_scheduler: Optional[CosineAnnealingScheduler] = None,
        no_weight_decay_cond: Optional[Callable] = None,
        scale_lr_cond: Optional[Callable] = None,
        lr_mult: float = 1.0,
    ) -> None:
        if config is None:
            from megatron.core.optimizer import OptimizerConfig

            config = OptimizerConfig(lr=1e-4, optimizer="adam", use_distributed_optimizer=False)
        self.config = config
        self.lr_scheduler = lr_scheduler
        self.no_weight_decay_cond = no_weight_decay_cond
        self.scale_lr_cond = scale_lr_cond
        self.lr_mult = lr_mult

    def build(self, chunks: Sequence[torch.nn.Module], max_steps: int | None) -> "MegatronOptimizer":
        from megatron.core.optimizer import get_megatron_optimizer

        if self.lr_scheduler is not None and self.config.min_lr is None:
            # megatron copies config.min_lr into every param group; the schedule reads it there
            self.config.min_lr = self.lr_scheduler.min_lr
        mcore = get_megatron_optimizer(self.config, list(chunks))
        scheduler = None
        if self.lr_scheduler is not None:
            scheduler = self.lr_scheduler.build(
                mcore, self.config.lr, max_steps, self.config.weight_decay
            )
        return MegatronOptimizer(mcore, scheduler)


class MegatronOptimizer(torch.optim.Optimizer):
    """A torch Optimizer face on megatron's optimizer, so Lightning's loops can drive it.

    `step(closure)` runs the closure (Megatron's forward-backward) and then megatron's step,
    which unscales, clips, checks for inf/nan and updates; the LR schedule steps after it.
    """

    def __init__(self, mcore: Any, scheduler: Any = None) -> None:
        # torch.optim.Optimizer.__init__ would re-register parameters megatron already owns.
        self.mcore = mcore
        self.scheduler = scheduler
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks: dict = {}
        self._optimizer_step_post_hooks: dict = {}
        self.last_grad_norm: float | None = None
        self.last_update_successful: bool = True

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.mcore.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.mcore.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        """No-op: Lightning calls it between the step and backward, but Megatron's schedule
        has already produced the gradients by then; `MegatronStrategy.megatron_step` zeroes
        them (DDP buffers and optimizer) before each forward-backward instead."""

    def zero_megatron_grads(self) -> None:
        self.mcore.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        success, grad_norm, _ = self.mcore.step()
        self.last_update_successful = bool(success)
        self.last_grad_norm = None if grad_norm is None else float(grad_norm)
        if self.scheduler is not None and success:
            self.scheduler.step(increment=1)
        return loss

    @property
    def lr(self) -> float:
        return float(self.mcore.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return self.mcore.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.mcore.load_state_dict(state_dict)

    @torch.no_grad()
    def sharded_state_dict(self, model_sharded_state_dict: dict[str, Any], is_loading: bool = False,
                           fully_reshardable: bool = False) -> dict[str, Any]:
        """Optimizer state keyed like the model's sharded tensors (reshardable), plus the schedule.

        The distributed optimizer saves in megatron's `dp_reshardable` form (each DP rank writes
        its own shard; loads at any DP size) or, with `fully_reshardable`, in the canonical
        per-parameter form that loads into any TP/PP/DP layout.
        """
        from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

        metadata: dict[str, Any] = {"chained_optim_avoid_prefix": True}
        for optimizer in self._leaf_optimizers():
            if isinstance(optimizer, DistributedOptimizer) and not is_loading:
                _fresh_adam_state(optimizer.optimizer)
        if any(isinstance(o, DistributedOptimizer) for o in self._leaf_optimizers()):
            metadata["distrib_optim_sharding_type"] = (
                "fully_reshardable" if fully_reshardable else "dp_reshardable")
        state = {"optimizer": self.mcore.sharded_state_dict(
            model_sharded_state_dict, is_loading=is_loading, metadata=metadata)}
        if self.scheduler is not None:
            state["lr_scheduler"] = self.scheduler.state_dict()
        return state

    def _leaf_optimizers(self) -> list[Any]:
        return list(getattr(self.mcore, "chained_optimizers", [self.mcore]))

    @torch.no_grad()
    def prepare_for_load(self) -> None:
        """Allocate the distributed optimizer's state (megatron's dummy step) so its sharded
        state dict has tensors to load into; a fresh run has taken no step yet."""
        from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

        for optimizer in self._leaf_optimizers():
            if isinstance(optimizer, DistributedOptimizer) and not optimizer.optimizer.state:
                optimizer._init_optimizer_states_with_dummy_values()

    @torch.no_grad()
    def load_sharded_state_dict(self, state: dict[str, Any]) -> None:
        leaves = self._leaf_optimizers()
        state = {**state, "optimizer": _match_chain(state["optimizer"], leaves)}
        with ADAM_STEP_LOADED_SEPARATELY.applied():
            self.mcore.load_state_dict(state["optimizer"])
        leaf_states = [state["optimizer"]] if len(leaves) == 1 else [
            state["optimizer"][k] for k in sorted(state["optimizer"])]
        for optimizer, leaf_state in zip(leaves, leaf_states, strict=True):
            _restore_adam_steps(optimizer, leaf_state)
        if self.scheduler is not None and "lr_scheduler" in state:
            self.scheduler.load_state_dict(state["lr_scheduler"])

    def __repr__(self) -> str:
        return f"MegatronOptimizer({type(self.mcore).__name__})"


def _fresh_adam_state(inner: Any) -> None:
    """Give torch Adam the state of "no step taken yet" where it has none.

    Before its first successful step (a save at step 0, or fp16 steps all skipped for overflow)
    the distributed optimizer's state_dict fails (megatron asserts on the per-parameter steps
    it reads). Zero moments and step 0 are exactly what torch's Adam starts from, so the saved
    state resumes as a fresh optimizer would run, and nothing else changes.
    """
    if not isinstance(inner, torch.optim.Adam | torch.optim.AdamW):
        return
    for group in inner.param_groups:
        for param in group["params"]:
            if inner.state.get(param):
                continue
            state = inner.state[param]
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group.get("amsgrad"):
                state["max_exp_avg_sq"] = torch.zeros_like(param)


def _match_chain(state: dict[Any, Any], leaves: list[Any]) -> dict[Any, Any]:
    """Optimizer state saved by a different number of chained optimizers, made to fit this one.

    A MoE model has one optimizer for dense and one for expert parameters when EP > 1, and a
    single one at EP 1. Per-parameter tensors are keyed by global parameter names either way
    and load as requested; only the common part (param-group settings, Adam's shared step) is
    laid out per chain. Then the current param-group settings are kept (the LR schedule sets
    lr) and the saved step is moved to where this optimizer reads it.
    """
    chain_keys = [k for k in state if isinstance(k, int)]
    if len(leaves) == 1 and chain_keys:  # saved as a chain, loading into one optimizer
        steps = [state[k].get("state", {}).get("common_step") for k in chain_keys]
        fitted = {k: v for k, v in state.items() if not isinstance(k, int)}
        parts = [fitted]
    elif len(leaves) > 1 and "param_groups" in state:  # saved as one, loading into a chain
        steps = [(state.get("state") or {}).get("common_step")]
        fitted = {k: v for k, v in state.items() if isinstance(k, int)}
        parts = [fitted[k] for k in sorted(fitted)]
    else:
        return state
    step = next((s for s in steps if s is not None), None)
    for part, optimizer in zip(parts, leaves, strict=True):
        current = optimizer.state_dict()["param_groups"]
        part["param_groups"] = [{**settings, "params": loaded["params"]}
                                for settings, loaded in zip(current, part["param_groups"], strict=True)]
        if step is not None:
            part.setdefault("state", {})["common_step"] = step
    return fitted


def _step_held_aside(original: Any) -> Any:
    def set_states(self: Any, model_param: Any, tensors: dict[str, Any]) -> None:
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        state = self.optimizer.state.get(main_param, {})
        step = state.pop("step", None) if "step" not in tensors else None
        try:
            original(self, model_param, tensors)
        finally:
            if step is not None:
                state["step"] = step

    return set_states


def _distributed_optimizer() -> Any:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return DistributedOptimizer


ADAM_STEP_LOADED_SEPARATELY = ScopedPatch(
    "adam_step_loaded_separately",
    "megatron's distributed optimizer saves Adam's `step` apart from the per-parameter tensors "
    "in its fully_reshardable form, but _set_main_param_and_optimizer_states copies every key "
    "of torch Adam's state, `step` included (KeyError without TE/Apex, whose fused Adam keeps "
    "no per-parameter step). For one load, `step` is held aside while the tensors are copied; "
    "_restore_adam_steps sets it.",
    _distributed_optimizer, "_set_main_param_and_optimizer_states", _step_held_aside)


def _restore_adam_steps(optimizer: Any, loaded: dict[str, Any]) -> None:
    """Give each parameter its own Adam `step`, valued as saved.

    megatron's distributed optimizer (without TE/Apex) saves the step in its param groups, then
    on load points every parameter at one shared step tensor and overwrites it with the
    per-bucket dummy values it allocated; torch's Adam would then also increment that one
    tensor once per parameter per step.
    """
    groups = (loaded.get("optimizer") or {}).get("param_groups") or []
    steps = {float(g["step"]) for g in groups if "step" in g}
    inner = getattr(optimizer, "optimizer", None)
    if len(steps) != 1 or inner is None:
        return
    step = steps.pop()
    for param_state in inner.state.values():
        if isinstance(param_state.get("step"), torch.Tensor):
            param_state["step"] = torch.tensor(step, dtype=torch.float32)
