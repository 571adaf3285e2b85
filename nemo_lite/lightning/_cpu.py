"""Every change nemo_lite makes to megatron-core so that it trains on CPU ranks (gloo).

megatron-core 0.16 assumes a CUDA device in a few dozen places: tensors allocated on
``torch.cuda.current_device()`` or ``device="cuda"``, RNG state read from the CUDA generator,
CUDA streams, ``param.type() == "torch.cuda.FloatTensor"`` checks and a couple of ``.cuda()``
calls. Rather than copying megatron functions, each shim below redirects one of those
assumptions to the CPU for the megatron modules that make it, and leaves the megatron code
itself in charge.

`apply()` is called once by `MegatronStrategy` when the run's device is the CPU; it is never
called when CUDA is used, so GPU behaviour is megatron's own. Every shim is listed in
`SHIMS` with the megatron code it touches and why.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from nemo_lite.lightning.shims import Shim

_CPU = torch.device("cpu")
_FACTORIES = (
    "empty", "zeros", "ones", "full", "tensor", "arange", "rand", "randn", "randint",
    "empty_like", "zeros_like", "ones_like", "full_like", "as_tensor", "linspace",
)


def _to_cpu_device(device: Any) -> Any:
    """Map any CUDA device designation (``"cuda"``, ``"cuda:1"``, ``0``, ``torch.device``) to CPU."""
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        return _CPU
    if isinstance(device, str) and device.startswith("cuda"):
        return _CPU
    if isinstance(device, torch.device) and device.type == "cuda":
        return _CPU
    return device


def _factory_on_cpu(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        kwargs.pop("pin_memory", None)  # pinning needs an accelerator; pointless on CPU
        return fn(*args, **kwargs)

    return wrapper


class _NullStream:
    """Stands in for ``torch.cuda.Stream``: on CPU every op is already ordered."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, stream) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def record_event(self, event=None):
        return _NullEvent()

    def __eq__(self, other) -> bool:
        return isinstance(other, _NullStream)

    def __hash__(self) -> int:
        return 0


class _NullEvent:
    """Stands in for ``torch.cuda.Event``: ordering is a no-op on CPU; `elapsed_time` (ms, as
    CUDA's) times between two `record` calls, which megatron's inference controller reports."""

    def __init__(self, *args, **kwargs):
        self.recorded_at = 0.0

    def record(self, stream=None) -> None:
        self.recorded_at = time.perf_counter()

    def elapsed_time(self, end: _NullEvent) -> float:
        return (end.recorded_at - self.recorded_at) * 1e3

    def wait(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True


class _AnyIndex:
    """``torch.cuda.default_generators[i]`` -> the CPU generator, whatever ``i`` is."""

    def __getitem__(self, index):
        return torch.default_generator


class _CudaOnCpu:
    """The ``torch.cuda`` namespace as the patched megatron modules see it."""

    current_device = staticmethod(lambda: _CPU)
    synchronize = staticmethod(lambda *a, **k: None)
    empty_cache = staticmethod(lambda: None)
    get_rng_state = staticmethod(lambda *a, **k: torch.get_rng_state())
    set_rng_state = staticmethod(lambda state, *a, **k: torch.set_rng_state(state))
    manual_seed = staticmethod(lambda seed: torch.default_generator.manual_seed(seed))
    Stream = _NullStream
    Event = _NullEvent
    default_generators = _AnyIndex()

    @staticmethod
    def stream(stream=None):
        return contextlib.nullcontext()

    @staticmethod
    def current_stream(device=None):
        return _NullStream()

    @staticmethod
    def default_stream(device=None):
        return _NullStream()

    def __getattr__(self, name: str):
        return getattr(torch.cuda, name)


class _TorchOnCpu:
    """The ``torch`` module as the patched megatron modules see it: CUDA devices become CPU."""

    cuda = _CudaOnCpu()

    def __init__(self):
        for name in _FACTORIES:
            setattr(self, name, _factory_on_cpu(getattr(torch, name)))

    def __getattr__(self, name: str):
        value = getattr(torch, name)
        setattr(self, name, value)  # cache: later lookups skip __getattr__
        return value


@contextlib.contextmanager
def _cuda_type_names() -> Iterator[None]:
    """Make ``t.type()`` of a CPU tensor answer ``"torch.cuda.<X>Tensor"`` for a moment.

    Megatron's optimizers sort parameters with ``param.type() in ["torch.cuda.HalfTensor", ...]``
    and its clipping asserts ``grad.type() == "torch.cuda.FloatTensor"``. Only the answer to the
    no-argument call changes, and only while the wrapped megatron call runs.
    """
    original = torch.Tensor.type

    def type_(self, *args, **kwargs):
        if args or kwargs or self.device.type != "cpu":
            return original(self, *args, **kwargs)
        return original(self).replace("torch.", "torch.cuda.", 1)

    torch.Tensor.type = type_
    try:
        yield
    finally:
        torch.Tensor.type = original


@contextlib.contextmanager
def _tensor_cuda_is_identity() -> Iterator[None]:
    """Make ``t.cuda()`` return ``t`` for a moment (megatron moves a weight it then all-reduces)."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _within(context: Callable[[], contextlib.AbstractContextManager], fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with context():
            return fn(*args, **kwargs)

    wrapper.__nemo_lite_cpu_shim__ = True
    return wrapper


def _cpu_get_rng_state(device=None, clone: bool = False, graph_safe: bool = False):
    state = torch.get_rng_state()
    return state.clone() if clone else state


def _cpu_set_rng_state(new_state, device=-1, graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


_TORCH_ON_CPU = _TorchOnCpu()

# The megatron modules whose functions allocate on `torch.cuda.current_device()` / "cuda",
# read CUDA RNG state, or use CUDA streams. Their module-level `torch` becomes `_TORCH_ON_CPU`.
DEVICE_MODULES = (
    "megatron.core.utils",  # GlobalMemoryBuffer.get_tensor, multi-tensor l2 norm
    "megatron.core.tensor_parallel.random",  # RNG tracker: CUDA generator -> CPU generator
    "megatron.core.tensor_parallel.mappings",  # gathers / reduce-scatters / all-to-all buffers
    "megatron.core.tensor_parallel.layers",  # SP all-gather buffers in forward and backward
    "megatron.core.tensor_parallel.utils",  # split / gather of 1-d tensors
    "megatron.core.tensor_parallel.data",  # broadcast_data
    "megatron.core.pipeline_parallel.schedules",  # total_num_tokens = zeros(device="cuda")
    "megatron.core.pipeline_parallel.p2p_communication",  # receive buffers, shape exchange
    "megatron.core.optimizer.optimizer",  # found-inf flags, loss scale tensors
    "megatron.core.optimizer.clip_grads",  # norm accumulators, overflow buffer
    "megatron.core.optimizer.distrib_optimizer",  # shard buffers
    "megatron.core.optimizer.grad_scaler",  # scale tensors
    "megatron.core.distributed.param_and_grad_buffer",  # param / grad buffers, comm streams
    "megatron.core.distributed.distributed_data_parallel",  # communication stream
    "megatron.core.distributed.finalize_model_grads",  # token-count all-reduce
    "megatron.core.models.common.embeddings.rotary_pos_embedding",  # inv_freq, get_emb
    "megatron.core.models.gpt.gpt_model",
    "megatron.core.transformer.module",
    "megatron.core.transformer.utils",  # get_default_causal_mask(device="cuda")
    "megatron.core.models.common.embeddings.yarn_rotary_pos_embedding",
    "megatron.core.models.common.embeddings.rope_utils",  # CP index (pinned, then .cuda())
    "megatron.core.pipeline_parallel.utils",
    "megatron.core.dist_checkpointing.exchange_utils",
    "megatron.core.dist_checkpointing.strategies.state_dict_saver",  # verify-reuse flags
    "megatron.core.dist_checkpointing.strategies.filesystem_async",  # synchronize before copy
    "megatron.core.dist_checkpointing.strategies.async_utils",  # liveness flags
    "megatron.core.transformer.transformer_layer",
    "megatron.core.transformer.attention",
    "megatron.core.transformer.dot_product_attention",
    "megatron.core.transformer.moe.experts",
    "megatron.core.transformer.moe.router",
    "megatron.core.transformer.moe.moe_utils",
    "megatron.core.transformer.moe.token_dispatcher",
    "megatron.core.transformer.moe.shared_experts",
    "megatron.core.rerun_state_machine",
)


def _install_device_redirect() -> None:
    for name in DEVICE_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "torch", None) is torch:
            module.torch = _TORCH_ON_CPU


def _install_rng_state() -> None:
    random = importlib.import_module("megatron.core.tensor_parallel.random")
    random._get_cuda_rng_state = _cpu_get_rng_state
    random._set_cuda_rng_state = _cpu_set_rng_state
    # The tracker warns whenever the CPU state changes inside fork(); on CPU the tracked
    # state *is* the CPU state, so that warning would fire on every dropout.
    logging.getLogger(random.__name__).addFilter(
        lambda record: "CPU RNG state changed" not in record.getMessage()
    )


def _install_type_names() -> None:
    optimizer = importlib.import_module("megatron.core.optimizer.optimizer")
    distrib = importlib.import_module("megatron.core.optimizer.distrib_optimizer")
    if not getattr(optimizer.clip_grad_by_total_norm_fp32, "__nemo_lite_cpu_shim__", False):
        optimizer.clip_grad_by_total_norm_fp32 = _within(
            _cuda_type_names, optimizer.clip_grad_by_total_norm_fp32
        )
    for cls in (optimizer.Float16OptimizerWithFloat16Params, distrib.DistributedOptimizer):
        if not getattr(cls.__init__, "__nemo_lite_cpu_shim__", False):
            cls.__init__ = _within(_cuda_type_names, cls.__init__)


def _install_embedding_sync() -> None:
    lm = importlib.import_module("megatron.core.models.common.language_module.language_module")
    cls = lm.LanguageModule
    if not getattr(cls.setup_embeddings_and_output_layer, "__nemo_lite_cpu_shim__", False):
        cls.setup_embeddings_and_output_layer = _within(
            _tensor_cuda_is_identity, cls.setup_embeddings_and_output_layer
        )


def _install_rope_cp_index() -> None:
    for name in ("rope_utils", "rotary_pos_embedding", "yarn_rotary_pos_embedding"):
        module = importlib.import_module(f"megatron.core.models.common.embeddings.{name}")
        fn = getattr(module, "get_pos_emb_on_this_cp_rank", None)
        if fn is not None and not getattr(fn, "__nemo_lite_cpu_shim__", False):
            module.get_pos_emb_on_this_cp_rank = _within(_tensor_cuda_is_identity, fn)


def _install_optimizer_gather() -> None:
    distrib = importlib.import_module("megatron.core.optimizer.distrib_optimizer")
    cls = distrib.DistributedOptimizer
    if not getattr(cls.get_parameter_state_dp_zero, "__nemo_lite_cpu_shim__", False):
        cls.get_parameter_state_dp_zero = _within(
            _tensor_cuda_is_identity, cls.get_parameter_state_dp_zero
        )


def _install_grad_scaler_load() -> None:
    scaler = importlib.import_module("megatron.core.optimizer.grad_scaler")
    cls = scaler.DynamicGradScaler
    if not getattr(cls.load_state_dict, "__nemo_lite_cpu_shim__", False):
        cls.load_state_dict = _within(_tensor_cuda_is_identity, cls.load_state_dict)


SHIMS: tuple[Shim, ...] = (
    Shim(
        "device_redirect",
        "modules in DEVICE_MODULES allocate on torch.cuda.current_device() or device='cuda' and "
        "use CUDA streams; they see a torch whose CUDA device is the CPU and whose streams are no-ops",
        _install_device_redirect,
    ),
    Shim(
        "rng_state",
        "tensor_parallel.random reads and writes the CUDA generator for its RNG tracker "
        "(_get_cuda_rng_state/_set_cuda_rng_state); on CPU the tracker swaps the CPU generator",
        _install_rng_state,
    ),
    Shim(
        "type_names",
        "Float16OptimizerWithFloat16Params / DistributedOptimizer sort params by "
        "param.type() == 'torch.cuda.*Tensor' and clip_grad_by_total_norm_fp32 asserts it",
        _install_type_names,
    ),
    Shim(
        "embedding_sync",
        "LanguageModule.setup_embeddings_and_output_layer calls weight.data.cuda() before the "
        "first/last pipeline stage all-reduce of tied embeddings",
        _install_embedding_sync,
    ),
    Shim(
        "rope_cp_index",
        "rope_utils.get_pos_emb_on_this_cp_rank builds its chunk index with pin_memory=True and "
        ".cuda(); with CP>1 and RoPE it runs every forward",
        _install_rope_cp_index,
    ),
    Shim(
        "optimizer_gather",
        "DistributedOptimizer.get_parameter_state_dp_zero (the fully_reshardable checkpoint "
        "form) moves each shard with send_tensor.cuda() before gathering it over DP",
        _install_optimizer_gather,
    ),
    Shim(
        "grad_scaler_load",
        "DynamicGradScaler.load_state_dict moves the saved loss scale with "
        ".cuda(torch.cuda.current_device()) (16-mixed resume)",
        _install_grad_scaler_load,
    ),
)

_applied = False


def apply() -> None:
    """Install every shim (idempotent). Only for runs whose device is the CPU."""
    global _applied
    if _applied:
        return
    from nemo_lite.lightning._cpu_moe import MOE_SHIMS  # noqa: I001

    for shim in SHIMS + MOE_SHIMS:
        shim.install()
    _applied = True
