"""What megatron-core's Mixture-of-Experts needs, beyond `_cpu.SHIMS`, to train on CPU ranks (gloo).

The MoE modules (router, token dispatchers, experts, moe_utils) already see `_cpu`'s CPU ``torch``
through ``DEVICE_MODULES``. Three more assumptions remain, each redirected narrowly here:

* ``moe_utils.te_general_gemm`` exists only when transformer-engine imports; the router's
  gating linear tests ``te_general_gemm is not None`` and so raises ``NameError`` without TE.
* The all-to-all dispatcher computes its split sizes as device tensors and turns them into numpy
  arrays with ``maybe_move_tensor_to_cpu(..., as_numpy=True)``, which converts only CUDA tensors.
  On CPU the sizes stay tensors, and ``all_to_all_single`` rejects tensor split sizes (TypeError).
  gloo itself does support ``all_to_all_single`` with uneven splits given as lists / numpy arrays.
* gloo's list ``all_gather`` rejects tensors of different sizes, which the all-gather-v of
  ``_gather_along_first_dim(output_split_sizes=...)`` uses (the all-to-all dispatcher with TP>1
  and sequence parallelism; also the backward of its reduce-scatter-v). gloo's list
  ``reduce_scatter`` accepts uneven sizes, so only the gather needs help.

Not shimmed, by configuration instead: MoE with TP>1 needs ``sequence_parallel=True`` (megatron
raises otherwise), and experts with ``add_bias_linear=True`` and expert TP 1 fail with an
in-place-on-view error; use ``add_bias_linear=False``.

`MOE_SHIMS` is meant to be installed after `_cpu.SHIMS`; every install is idempotent.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from typing import Any

import torch

from nemo_lite.lightning.shims import Shim


def _install_te_general_gemm() -> None:
    """``RouterGatingLinearFunction`` (moe_utils) reads ``te_general_gemm``, bound only with TE.

    Binding it to ``None`` selects megatron's own ``torch.mm`` path in forward and backward.
    """
    moe_utils = importlib.import_module("megatron.core.transformer.moe.moe_utils")
    if not hasattr(moe_utils, "te_general_gemm"):
        moe_utils.te_general_gemm = None


def _split_sizes_to_numpy(fn):
    """Wrap ``moe_utils.maybe_move_tensor_to_cpu`` so a CPU tensor also becomes numpy on request.

    On CUDA, megatron's function copies the split sizes to the host and returns numpy arrays;
    on CPU it returns the tensor unchanged. With ``as_numpy=True`` (only ever used for the
    dispatcher's ``input_splits`` / ``output_splits`` / ``output_splits_tp``) the wrapper gives
    the same numpy array megatron gets on a GPU. Everything else goes to megatron's function.
    """

    @functools.wraps(fn)
    def wrapper(tensor, as_numpy: bool = False, record_stream: bool = False):
        if as_numpy and torch.is_tensor(tensor) and tensor.device.type == "cpu":
            return tensor.numpy()
        return fn(tensor, as_numpy=as_numpy, record_stream=record_stream)

    wrapper.__nemo_lite_cpu_shim__ = True
    return wrapper


def _install_alltoall_split_sizes() -> None:
    # token_dispatcher binds the name at import: patch the name MoEAlltoAllTokenDispatcher
    # (`_maybe_dtoh_and_synchronize`) looks up, not moe_utils itself.
    dispatcher = importlib.import_module("megatron.core.transformer.moe.token_dispatcher")
    if not getattr(dispatcher.maybe_move_tensor_to_cpu, "__nemo_lite_cpu_shim__", False):
        dispatcher.maybe_move_tensor_to_cpu = _split_sizes_to_numpy(
            dispatcher.maybe_move_tensor_to_cpu
        )


def _uses_gloo(group: Any) -> bool:
    try:
        return torch.distributed.get_backend(group) == "gloo"
    except (RuntimeError, ValueError):
        return False


def _gather_v_on_gloo(fn):
    """Wrap ``mappings._gather_along_first_dim`` for uneven ``output_split_sizes`` on gloo.

    Each rank pads its rows to the largest split, megatron's own gather does the even
    all-gather, and the padding is cut out again. This is a plain (non-autograd) helper like
    megatron's: the autograd functions that call it (``_GatherFromSequenceParallelRegion``,
    ``_ReduceScatterToSequenceParallelRegion.backward``) keep their own backward, which is the
    reduce-scatter-v gloo supports. Equal splits, other backends and groups of one go to megatron.
    """

    @functools.wraps(fn)
    def wrapper(
        input_: torch.Tensor,
        group: Any,
        output_split_sizes: Sequence[int] | None = None,
        use_global_buffer: bool = False,
    ) -> torch.Tensor:
        if output_split_sizes is None or group is None or group.size() == 1:
            return fn(input_, group, output_split_sizes, use_global_buffer)
        sizes = [int(size) for size in output_split_sizes]
        if len(set(sizes)) == 1 or not _uses_gloo(group):
            return fn(input_, group, output_split_sizes, use_global_buffer)
        rows = max(sizes)
        padded = input_.new_zeros((rows,) + tuple(input_.shape[1:]))
        padded[: input_.shape[0]] = input_
        gathered = fn(padded, group, None, False)  # [world * rows, ...], megatron's even gather
        return torch.cat([gathered[i * rows : i * rows + size] for i, size in enumerate(sizes)])

    wrapper.__nemo_lite_cpu_shim__ = True
    return wrapper


def _install_gather_v() -> None:
    # The autograd functions in mappings look `_gather_along_first_dim` up as a module global.
    mappings = importlib.import_module("megatron.core.tensor_parallel.mappings")
    if not getattr(mappings._gather_along_first_dim, "__nemo_lite_cpu_shim__", False):
        mappings._gather_along_first_dim = _gather_v_on_gloo(mappings._gather_along_first_dim)


MOE_SHIMS: tuple[Shim, ...] = (
    Shim(
        "moe_te_general_gemm",
        "moe_utils.RouterGatingLinearFunction tests `te_general_gemm is not None`, a name bound "
        "only when transformer-engine imports (NameError without TE); bound to None it takes "
        "megatron's torch.mm path",
        _install_te_general_gemm,
    ),
    Shim(
        "moe_alltoall_split_sizes",
        "MoEAlltoAllTokenDispatcher._maybe_dtoh_and_synchronize converts split sizes to numpy "
        "via moe_utils.maybe_move_tensor_to_cpu only for CUDA tensors; on CPU they stay tensors "
        "and torch.distributed.all_to_all_single raises TypeError (gloo accepts numpy/list splits)",
        _install_alltoall_split_sizes,
    ),
    Shim(
        "gather_v_on_gloo",
        "tensor_parallel.mappings._gather_along_first_dim(output_split_sizes=...) uses a list "
        "all_gather of uneven tensors, which gloo rejects (all-to-all dispatcher with TP>1 + SP); "
        "on gloo uneven splits are padded, gathered evenly by megatron's code, and unpadded",
        _install_gather_v,
    ),
)


def apply() -> None:
    """Install every MoE shim (each install is idempotent). Install `_cpu.SHIMS` first."""
    for shim in MOE_SHIMS:
        shim.install()
