"""How a Hugging Face tensor becomes a megatron-core one and back: the mapping as data.

A family's conversion is a list of `Rule`s read top to bottom: the megatron parameter name (with
`{i}` for the layer, `{e}` for the expert), the Hugging Face tensor names it is made of, and the
pair of functions between them (`merge`, and its exact inverse `split`). Names without a
function are copied as they are. Every transform here is a reshape / concatenation / slice:
export after import gives back the original tensors bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Rule:
    megatron: str
    hf: tuple[str, ...]
    merge: Callable[[Sequence[torch.Tensor], Any], torch.Tensor] | None = None
    split: Callable[[torch.Tensor, Any], tuple[torch.Tensor, ...]] | None = None

    def expand(self, layers: int, experts: int = 0) -> Iterator[tuple[str, tuple[str, ...]]]:
        """(megatron name, HF names) for every layer / expert this rule covers."""
        layer_range = range(layers) if "{i}" in self.megatron else [None]
        expert_range = range(experts) if "{e}" in self.megatron else [None]
        for i in layer_range:
            for e in expert_range:
                fill = {"i": i, "e": e}
                yield (self.megatron.format(**fill),
                       tuple(name.format(**fill) for name in self.hf))


def qkv_merge(tensors: Sequence[torch.Tensor], config: Any) -> torch.Tensor:
    """HF q / k / v projections -> megatron's fused QKV, grouped per query group:
    [g0: q heads of g0, k0, v0 | g1: ...] (weights [out, in] or biases [out])."""
    q, k, v = tensors
    groups, head = config.num_query_groups or config.num_attention_heads, config.kv_channels
    tail = q.shape[1:]
    q = q.reshape(groups, -1, *tail)
    k = k.reshape(groups, head, *tail)
    v = v.reshape(groups, head, *tail)
    return torch.cat([q, k, v], dim=1).reshape(-1, *tail)


def qkv_split(fused: torch.Tensor, config: Any) -> tuple[torch.Tensor, ...]:
    groups, head = config.num_query_groups or config.num_attention_heads, config.kv_channels
    q_per_group = config.num_attention_heads // groups * head
    tail = fused.shape[1:]
    grouped = fused.reshape(groups, q_per_group + 2 * head, *tail)
    q, k, v = grouped.split([q_per_group, head, head], dim=1)
    return (q.reshape(-1, *tail).contiguous(), k.reshape(-1, *tail).contiguous(),
            v.reshape(-1, *tail).contiguous())


def gate_up_merge(tensors: Sequence[torch.Tensor], config: Any) -> torch.Tensor:
    """SwiGLU: HF gate and up projections -> megatron's fc1 [gate; up] (silu(gate) * up)."""
    return torch.cat(list(tensors), dim=0)


def gate_up_split(fused: torch.Tensor, config: Any) -> tuple[torch.Tensor, ...]:
    gate, up = fused.chunk(2, dim=0)
    return gate.contiguous(), up.contiguous()


def transpose_merge(tensors: Sequence[torch.Tensor], config: Any) -> torch.Tensor:
    """GPT-2's Conv1D stores [in, out]; megatron's linears [out, in]."""
    return tensors[0].t().contiguous()


def transpose_split(tensor: torch.Tensor, config: Any) -> tuple[torch.Tensor, ...]:
    return (tensor.t().contiguous(),)


def layer_count(names: Sequence[str], pattern: str) -> int:
    """How many layers a set of HF names has, from a pattern like `model.layers.{i}.`."""
    regex = re.compile(re.escape(pattern).replace(r"\{i\}", r"(\d+)"))
    found = {int(m.group(1)) for name in names if (m := regex.match(name))}
    return max(found) + 1 if found else 0
