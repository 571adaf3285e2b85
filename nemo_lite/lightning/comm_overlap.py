"""MegatronCommOverlapCallback: megatron's communication/computation overlap, set NeMo's way.

Each option is `None` (NeMo's automatic choice for the layout) or an explicit value, which is
checked against the run: an overlap that cannot work here is an error naming the fix, never a
silent no-op. `plan_comm_overlap` is the pure decision (unit-tested without any process); the
callback applies it on every rank in `setup`, after the process groups exist and before the
model is built and wrapped in megatron's DDP:
- model config (megatron TransformerConfig): tp_comm_overlap (+ TE userbuffers),
  overlap_p2p_comm, batch_p2p_comm, defer_embedding_wgrad_compute, wgrad_deferral_limit;
- DDP config (strategy.override_ddp): overlap_grad_reduce, overlap_param_gather,
  align_param_gather, bucket_size.
On CPU ranks (gloo) DP grad-reduce and param-gather overlap run as on GPUs (same losses);
TE userbuffers and overlapped or batched pipeline p2p are refused there (gloo aborts on the
former, gives wrong gradients with the latter under interleaving).
"""

import dataclasses
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback

from nemo_lite.io.capture import IOMixin

# NeMo's automatic DDP bucket when overlapping (elements per bucket).
AUTO_BUCKET_SIZE = 128 * 1024 * 1024
BOOTSTRAP_BACKENDS = ("nccl", "mpi", "gloo")
MODEL_FIELDS = ("tp_comm_overlap", "tp_comm_bootstrap_backend", "overlap_p2p_comm",
                "batch_p2p_comm", "defer_embedding_wgrad_compute", "wgrad_deferral_limit")
DDP_FIELDS = ("overlap_grad_reduce", "overlap_param_gather", "align_param_gather", "bucket_size")


class CommOverlapError(ValueError):
    """An overlap option that cannot work with this run's layout, device or optimizer."""


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What the overlap decision depends on (read from the strategy on a rank, or given)."""

    tp: int = 1
    pp: int = 1
    vpp: Optional[int] = None
    dp: int = 1
    sequence_parallel: bool = False
    cuda: bool = False
    transformer_engine: bool = False
    distributed_optimizer: bool = False
    gradient_accumulation_fusion: bool = False


@dataclasses.dataclass(frozen=True)
class CommOverlapPlan:
    """Field values to write: `model` into the TransformerConfig, `ddp` into the DDP config."""

    model: dict
    ddp: dict


def _pick(requested: Optional[Any], automatic: Any) -> Any:
    return automatic if requested is None else requested


def plan_comm_overlap(options: dict, facts: RunFacts,
                      current_ddp: Optional[dict] = None) -> CommOverlapPlan:
    """Resolve `options` (field -> value or None) for `facts`; raise CommOverlapError.

    A DDP option left None keeps `current_ddp`'s value (the strategy's DDP config) unless the
    automatic choice turns it on; an explicit value is checked and wins.
    """
    o = {name: options.get(name) for name in MODEL_FIELDS + DDP_FIELDS}
    current = current_ddp or {}
    interleaved = facts.pp > 1 and (facts.vpp or 1) > 1
    overlap_dp = facts.dp > 1 and facts.distributed_optimizer

    tp_overlap = bool(o["tp_comm_overlap"])
    if tp_overlap:
        missing = [why for why, bad in (
            (f"tensor parallelism (TP={facts.tp}; needs >= 2)", facts.tp < 2),
            ("sequence_parallel=True", not facts.sequence_parallel),
            ("a CUDA GPU (this run is on the CPU)", not facts.cuda),
            ("transformer-engine (not installed)", not facts.transformer_engine)) if bad]
        if missing:
            raise CommOverlapError("tp_comm_overlap (TE userbuffers) needs " + ", ".join(missing)
                                   + ": provide them or set tp_comm_overlap=False.")

    if facts.pp == 1:
        for name in ("overlap_p2p_comm", "batch_p2p_comm", "defer_embedding_wgrad_compute"):
            if o[name]:
                raise CommOverlapError(f"{name}=True needs pipeline parallelism (PP=1 here): "
                                       "set pipeline_model_parallel_size >= 2 or drop it.")
    if o["overlap_p2p_comm"] and not interleaved:
        raise CommOverlapError("overlap_p2p_comm=True works with the interleaved schedule only: "
                               "set virtual_pipeline_model_parallel_size >= 2 or drop it.")
    if o["overlap_p2p_comm"] and not facts.cuda:
        raise CommOverlapError("overlap_p2p_comm=True on CPU ranks: gloo pairs the concurrent "
                               "sends wrongly (abort: 'Received data size doesn't match'); drop "
                               "it on CPU (it is for GPUs).")
    overlap_p2p = bool(_pick(o["overlap_p2p_comm"], interleaved and facts.cuda))
    batch_p2p = bool(_pick(o["batch_p2p_comm"], facts.pp > 1 and not overlap_p2p and facts.cuda))
    if overlap_p2p and batch_p2p:
        raise CommOverlapError("overlap_p2p_comm and batch_p2p_comm exclude each other "
                               "(megatron): set batch_p2p_comm=False.")
    if batch_p2p and not facts.cuda:
        raise CommOverlapError("batch_p2p_comm=True gives wrong gradients on CPU ranks (gloo) "
                               "with interleaving and needs CUDA sync: drop it on CPU.")

    defer = bool(o["defer_embedding_wgrad_compute"])
    if defer and not facts.gradient_accumulation_fusion:
        raise CommOverlapError("defer_embedding_wgrad_compute=True needs the model config's "
                               "gradient_accumulation_fusion=True (a GPU fusion): set it or drop "
                               "the deferral.")
    limit = o["wgrad_deferral_limit"]
    if limit is not None and (not defer or not isinstance(limit, int) or limit < 0):
        raise CommOverlapError(f"wgrad_deferral_limit={limit!r} needs "
                               "defer_embedding_wgrad_compute=True and an integer >= 0.")

    grad_reduce = bool(_pick(o["overlap_grad_reduce"],
                             overlap_dp or current.get("overlap_grad_reduce", False)))
    param_gather = bool(_pick(o["overlap_param_gather"], overlap_dp or (
        facts.distributed_optimizer and current.get("overlap_param_gather", False))))
    if param_gather and not facts.distributed_optimizer:
        raise CommOverlapError("overlap_param_gather=True needs the distributed optimizer: set "
                               "OptimizerConfig(use_distributed_optimizer=True) or drop it.")
    align = bool(_pick(o["align_param_gather"], param_gather and (
        interleaved or current.get("align_param_gather", False))))
    if align and not param_gather:
        raise CommOverlapError("align_param_gather=True aligns the overlapped parameter "
                               "all-gathers: it needs overlap_param_gather=True.")
    bucket = o["bucket_size"]
    if bucket is not None and (not isinstance(bucket, int) or bucket < 1):
        raise CommOverlapError(f"bucket_size={bucket!r}: use a positive number of elements.")
    if bucket is None and (grad_reduce or param_gather) and overlap_dp:
        bucket = current.get("bucket_size") or AUTO_BUCKET_SIZE

    model = {"tp_comm_overlap": tp_overlap, "overlap_p2p_comm": overlap_p2p,
             "batch_p2p_comm": batch_p2p, "defer_embedding_wgrad_compute": defer}
    if defer:
        model["wgrad_deferral_limit"] = limit or 0
    if tp_overlap and o["tp_comm_bootstrap_backend"] is not None:
        model["tp_comm_bootstrap_backend"] = o["tp_comm_bootstrap_backend"]
    ddp = {"overlap_grad_reduce": grad_reduce, "overlap_param_gather": param_gather,
           "align_param_gather": align}
    if bucket is not None:
        ddp["bucket_size"] = bucket
    return CommOverlapPlan(model=model, ddp=ddp)


class MegatronCommOverlapCallback(Callback, IOMixin):
    """NeMo's MegatronCommOverlapCallback: overlap options for TP, PP and DP communication.

    `None` = automatic: with the distributed optimizer and DP > 1, grad reduce-scatter and
    param all-gather overlap (128M-element buckets; aligned across stages when interleaved);
    on GPUs, p2p overlaps under the interleaved schedule and is batched otherwise.
    `tp_comm_overlap_cfg` is TE's userbuffer config (`initialize_ub(ub_cfgs=...)`), a dict.
    """

    def __init__(
        self,
        tp_comm_overlap: Optional[bool] = None,
        tp_comm_overlap_cfg: Optional[dict] = None,
        tp_comm_bootstrap_backend: Optional[str] = None,
        overlap_p2p_comm: Optional[bool] = None,
        batch_p2p_comm: Optional[bool] = None,
        overlap_grad_reduce: Optional[bool] = None,
        overlap_param_gather: Optional[bool] = None,
        align_param_gather: Optional[bool] = None,
        bucket_size: Optional[int] = None,
        defer_embedding_wgrad_compute: Optional[bool] = None,
        wgrad_deferral_limit: Optional[int] = None,
    ) -> None:
        if tp_comm_bootstrap_backend not in (None, *BOOTSTRAP_BACKENDS):
            raise CommOverlapError(f"tp_comm_bootstrap_backend={tp_comm_bootstrap_backend!r}: "
                                   f"use one of {', '.join(BOOTSTRAP_BACKENDS)}.")
        if tp_comm_overlap_cfg is not None and not isinstance(tp_comm_overlap_cfg, dict):
            raise CommOverlapError("tp_comm_overlap_cfg must be a dict of TE userbuffer "
                                   f"settings, got {type(tp_comm_overlap_cfg).__name__}.")
        self.tp_comm_overlap_cfg = tp_comm_overlap_cfg
        self.options = {
            "tp_comm_overlap": tp_comm_overlap,
            "tp_comm_bootstrap_backend": tp_comm_bootstrap_backend,
            "overlap_p2p_comm": overlap_p2p_comm,
            "batch_p2p_comm": batch_p2p_comm,
            "overlap_grad_reduce": overlap_grad_reduce,
            "overlap_param_gather": overlap_param_gather,
            "align_param_gather": align_param_gather,
            "bucket_size": bucket_size,
            "defer_embedding_wgrad_compute": defer_embedding_wgrad_compute,
            "wgrad_deferral_limit": wgrad_deferral_limit,
        }
        self.plan: Optional[CommOverlapPlan] = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        from nemo_lite.lightning.strategy import MegatronStrategy

        strategy = trainer.strategy
        if not isinstance(strategy, MegatronStrategy):
            raise CommOverlapError("MegatronCommOverlapCallback needs nl.MegatronStrategy, got "
                                   f"{type(strategy).__name__}.")
        config = pl_module.config
        ddp = strategy.megatron_ddp_config()
        current = {name: getattr(ddp, name) for name in DDP_FIELDS}
        self.plan = plan_comm_overlap(self.options, self._facts(strategy, pl_module), current)
        for name, value in self.plan.model.items():
            setattr(config, name, value)
        strategy.override_ddp(**self.plan.ddp)
        if self.plan.model["tp_comm_overlap"]:
            self._init_te_userbuffers(strategy, config)

    @staticmethod
    def _facts(strategy: Any, pl_module: Any) -> RunFacts:
        from megatron.core import parallel_state

        from nemo_lite.lightning.device import transformer_engine_installed

        optim_config = getattr(getattr(pl_module, "optim", None), "config", None)
        layout = strategy.layout
        return RunFacts(
            tp=layout.tensor_model_parallel_size,
            pp=layout.pipeline_model_parallel_size,
            vpp=layout.virtual_pipeline_model_parallel_size,
            dp=parallel_state.get_data_parallel_world_size(),
            sequence_parallel=layout.sequence_parallel,
            cuda=strategy.uses_cuda,
            transformer_engine=transformer_engine_installed(),
            distributed_optimizer=bool(getattr(optim_config, "use_distributed_optimizer", False)),
            gradient_accumulation_fusion=bool(pl_module.config.gradient_accumulation_fusion),
        )

    def _init_te_userbuffers(self, strategy: Any, config: Any) -> None:
        """TE's userbuffers for the sequence-parallel activations, before any TE layer exists
        (once per process: TE refuses a second initialisation, e.g. fit then validate)."""
        from megatron.core import parallel_state
        from transformer_engine.pytorch import module as te_module

        if getattr(te_module.base, "_ub_communicators", None) is not None:
            return
        seq = strategy.seq_length if strategy.seq_length > 1 else config.seq_length
        shape = [seq * strategy.micro_batch_size
                 // parallel_state.get_context_parallel_world_size(), config.hidden_size]
        te_module.base.initialize_ub(
            shape=shape, tp_size=parallel_state.get_tensor_model_parallel_world_size(),
            use_fp8=config.fp8 is not None, ub_cfgs=self.tp_comm_overlap_cfg,
            bootstrap_backend=self.options["tp_comm_bootstrap_backend"] or "nccl")
