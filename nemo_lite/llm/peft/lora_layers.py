"""LoRA layers: a megatron linear plus a low-rank, tensor-parallel adapter beside it.

`LoRALinear` wraps a ColumnParallelLinear / RowParallelLinear (or a transformer-engine linear
with the same `(output, bias)` interface) and returns `base(x) + scale * B(A(x))`. The two
adapter halves are megatron linears, split across the tensor-parallel group like the base:

    column-parallel base (output split):  A = ColumnParallelLinear(gather_output=True)
        (A split by rank, its small [.., dim] output all-gathered) and
        B = ColumnParallelLinear (output split like the base's)
    row-parallel base (input split):      A = RowParallelLinear(input_is_parallel=True)
        (A consumes the base's split input; its [.., dim] output is all-reduced once)
        and B = ColumnParallelLinear(gather_output=True) (B's output is whole, like the base's)

Checkpoint keys of the base stay those of the unwrapped model (`...linear_qkv.weight`), so a
pretrained checkpoint loads into the wrapped model; the adapter's are `...adapter.linear_in.*`
and `...adapter.linear_out.*`.
"""

from __future__ import annotations

import copy
import zlib
from typing import Any

import torch
from megatron.core.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    scatter_to_sequence_parallel_region,
)

ADAPTER = "adapter."


class _NoExtraState:
    """The adapter halves carry no `_extra_state` entry, so that every entry an adapter adds
    to a state dict is a trainable tensor (what a trainable-only checkpoint keeps). megatron's
    linears also add an empty one to every state dict they load; it is dropped again."""

    get_extra_state = torch.nn.Module.get_extra_state
    set_extra_state = torch.nn.Module.set_extra_state

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_pre_hook(_drop_extra_state)


def _drop_extra_state(module: torch.nn.Module, state: dict, prefix: str, *args: Any) -> None:
    state.pop(f"{prefix}_extra_state", None)


class AdapterColumnLinear(_NoExtraState, ColumnParallelLinear):
    pass


class AdapterRowLinear(_NoExtraState, RowParallelLinear):
    pass


def parallel_mode(module: torch.nn.Module) -> str | None:
    """'column' / 'row' for a tensor-parallel linear (megatron's or transformer-engine's)."""
    mode = getattr(module, "parallel_mode", None)  # transformer-engine linears
    if mode in ("column", "row"):
        return mode
    if isinstance(module, ColumnParallelLinear) or hasattr(module, "output_size_per_partition"):
        return "column"
    if isinstance(module, RowParallelLinear) or hasattr(module, "input_size_per_partition"):
        return "row"
    return None


def _no_init(weight: torch.Tensor) -> None:
    """megatron's init hook for the adapter halves: `LoRAAdapter` sets the values itself."""


class LoRAAdapter(torch.nn.Module):
    """`scale * B(A(dropout(x)))`, tensor-parallel as the base linear of mode `mode`.

    Sequence parallelism: the input of a column-parallel base is split along the sequence,
    so A all-gathers it (as the base does) unless `input_gathered` (transformer-engine's
    LayerNorm+linear hands over its already gathered LayerNorm output); a row-parallel base
    reduce-scatters its output along the sequence, so the adapter's whole output is split
    along the sequence the same way. Every other adapter matmul runs without SP.
    """

    def __init__(self, mode: str, in_features: int, out_features: int, dim: int, alpha: float,
                 dropout: float, dropout_position: str, config: Any, glu_output: bool,
                 seed: int, input_gathered: bool = False, expert: bool = False) -> None:
        super().__init__()
        self.mode, self.dim, self.scale = mode, dim, alpha / dim
        self.glu_output = glu_output
        self.dropout = torch.nn.Dropout(dropout) if dropout > 0 else None
        self.dropout_position = dropout_position
        # an expert's tokens arrive from the MoE dispatcher whole (never split along the
        # sequence); its halves are expert linears: expert-TP group (size 1, see LoRA), and
        # gradients reduced over the expert-data-parallel group (`allreduce=False` at EP > 1)
        self.sequence_parallel = bool(getattr(config, "sequence_parallel", False)) and not expert
        plain = copy.copy(config)
        plain.sequence_parallel = False
        halves = dict(bias=False, init_method=_no_init, is_expert=expert)
        if mode == "column":
            in_config = plain if input_gathered or expert else config
            self.linear_in = AdapterColumnLinear(in_features, dim, config=in_config,
                                                 gather_output=True, **halves)
            self.linear_out = AdapterColumnLinear(dim, out_features, config=plain,
                                                  gather_output=False, **halves)
        else:
            self.linear_in = AdapterRowLinear(in_features, dim, config=plain,
                                              input_is_parallel=True, skip_bias_add=True,
                                              **halves)
            self.linear_out = AdapterColumnLinear(dim, out_features, config=plain,
                                                  gather_output=True, **halves)
        self._seeded_init(in_features, seed)

    @torch.no_grad()
    def _seeded_init(self, in_features: int, seed: int) -> None:
        """A: Xavier from a generator seeded by (seed, layer), built whole and split like the
        weight, so every TP layout and device starts from the same A. B: zero, so the adapted
        model equals the base one at the start."""
        generator = torch.Generator().manual_seed(seed)
        full = torch.empty(self.dim, in_features, dtype=torch.float32)
        torch.nn.init.xavier_uniform_(full, generator=generator)
        weight = self.linear_in.weight
        axis = 0 if self.mode == "column" else 1
        rank = self.linear_in.tp_group.rank()  # the expert-TP group for an expert
        size = weight.shape[axis]
        weight.copy_(full.narrow(axis, rank * size, size).to(weight.dtype))
        self.linear_out.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None and self.dropout_position == "pre":
            x = self.dropout(x)
        hidden, _ = self.linear_in(x)
        out, _ = self.linear_out(hidden)
        if self.mode == "row" and self.sequence_parallel:
            out = scatter_to_sequence_parallel_region(out)
        if self.dropout is not None and self.dropout_position == "post":
            out = self.dropout(out)
        return out * self.scale

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: dict | None = None) -> dict[str, Any]:
        state = {}
        for name in ("linear_in", "linear_out"):
            state.update(getattr(self, name).sharded_state_dict(
                f"{prefix}{name}.", sharded_offsets, metadata))
        if self.glu_output:  # B's rows follow the base's [gate; up] per-rank layout
            from megatron.core.transformer.mlp import apply_swiglu_sharded_factory

            key = f"{prefix}linear_out.weight"
            singleton = (metadata or {}).get("singleton_local_shards", False)
            state[key] = apply_swiglu_sharded_factory(state[key], sharded_offsets, singleton)
        return state


class LoRALinear(torch.nn.Module):
    """`to_wrap(x)` plus the adapter; keeps megatron's `(output, bias)` return value.

    Its state dict presents the base's entries under the wrapper's own prefix (as if
    unwrapped), so checkpoints and megatron's per-module key handling (e.g. the SwiGLU split
    of `linear_fc1.weight`) see the base model's keys.
    """

    def __init__(self, to_wrap: torch.nn.Module, adapter: LoRAAdapter) -> None:
        super().__init__()
        self.to_wrap = to_wrap
        self.adapter = adapter
        # transformer-engine's LayerNorm+linear: the adapter must see the normalised input
        self.returns_layernorm_output = hasattr(to_wrap, "return_layernorm_output")
        if self.returns_layernorm_output:
            to_wrap.return_layernorm_output = True
            to_wrap.return_layernorm_output_gathered = True
        self.register_state_dict_post_hook(_base_keys_unnested)
        self.register_load_state_dict_pre_hook(_base_keys_nested)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        out, bias, adapter_input = self.base_forward(x, *args, **kwargs)
        return out + self.adapter(adapter_input).to(out.dtype), bias

    def base_forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
        """(base output, its separately returned bias, the input the adapter takes)."""
        out = self.to_wrap(x, *args, **kwargs)
        adapter_input = x
        if len(out) == 3:  # transformer-engine: (output, bias, layernorm output)
            out, bias, adapter_input = out
        else:
            out, bias = out
            if isinstance(out, tuple):  # transformer-engine: ((output, layernorm output), None)
                out, adapter_input = out
        return out, bias, adapter_input

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (),
                           metadata: dict | None = None) -> dict[str, Any]:
        state = self.to_wrap.sharded_state_dict(prefix, sharded_offsets, metadata)
        state.update(self.adapter.sharded_state_dict(f"{prefix}{ADAPTER}", sharded_offsets,
                                                     metadata))
        return state

    @torch.no_grad()
    def merged(self) -> torch.nn.Module:
        """The base linear with `W += scale * B @ A` folded in (this TP rank's shard)."""
        a = self.adapter.linear_in.weight.float()
        b = self.adapter.linear_out.weight.float()
        group = self.adapter.linear_in.tp_group
        if self.adapter.mode == "column":  # W [out/tp, in] += B_r [out/tp, dim] @ A [dim, in]
            a = gather_tp(a, 0, group)
        else:  # W [out, in/tp] += B [out, dim] @ A_r [dim, in/tp]
            b = gather_tp(b, 0, group)
        weight = self.to_wrap.weight
        weight.add_((self.adapter.scale * (b @ a)).to(weight.dtype))
        if self.returns_layernorm_output:
            self.to_wrap.return_layernorm_output = False
            self.to_wrap.return_layernorm_output_gathered = False
        return self.to_wrap


def gather_tp(tensor: torch.Tensor, axis: int, group: Any) -> torch.Tensor:
    size = group.size()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    torch.distributed.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=axis)


def _base_keys_unnested(module: LoRALinear, state: dict, prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state if k.startswith(f"{prefix}to_wrap.")]:
        state[prefix + key[len(prefix) + len("to_wrap."):]] = state.pop(key)


def _base_keys_nested(module: LoRALinear, state: dict, prefix: str, *args: Any) -> None:
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix):]
        if not rest.startswith((ADAPTER, "to_wrap.")):
            state[f"{prefix}to_wrap.{rest}"] = state.pop(key)


def layer_seed(seed: int, name: str) -> int:
    """A stable per-layer seed (the same on every rank and every run)."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)
