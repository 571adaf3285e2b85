"""Core attention for megatron's local layer spec: context parallelism, packed rows, and torch's
fused attention kernels on a GPU without transformer-engine.

megatron-core's local ``DotProductAttention`` refuses ``context_parallel_size > 1`` (only
transformer-engine's attention implements it), and transformer-engine does not install on CPU
machines. `ContextParallelDotProductAttention` is a drop-in ``core_attention`` for the local spec:
with one CP rank it computes exactly what ``DotProductAttention`` computes; with several it
all-gathers K/V over the CP group (backward: sum of the gathered gradients) and masks with the
global positions of the local tokens, laid out as ``megatron.core.utils.get_batch_on_this_cp_rank``
lays them out (2*CP chunks; rank r holds chunks r and 2*CP-1-r). Only torch.distributed collectives
that gloo and NCCL both have are used, so it works on CPU and GPU ranks alike.

Two kernels compute the attention itself, chosen by megatron's own `config.attention_backend`:
- explicit scores (megatron's arithmetic: baddbmm, masked_fill, softmax, bmm; it materialises
  the [b, heads, sq, sk] score matrix): `local` / `unfused`, and `auto` on CPU;
- torch's `scaled_dot_product_attention` (flash / memory-efficient kernels on a GPU, no score
  matrix for causal or per-document attention; GQA without repeating K/V): `flash` / `fused`,
  and `auto` on CUDA. Masks, windows, CP and packed rows go through the same `_mask` as the
  explicit path (an explicit mask selects torch's memory-efficient kernel instead of flash).
  Query-key layer scaling multiplies the scores in fp32 before the softmax, which SDPA cannot:
  it keeps the explicit path.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer.enums import AttnBackend, AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import is_layer_window_attention
from torch import Tensor

from nemo_lite.lightning.device import is_cuda

_MASK_VALUE = -10000.0  # megatron's attention_mask_func fill value (not -inf: no NaN rows)
_CAUSAL = (AttnMaskType.causal, AttnMaskType.padding_causal)


class _AllGatherCP(torch.autograd.Function):
    """[...] -> [cp, ...] stacked over the CP group; backward sums the gradients of all ranks.

    gloo has no reduce-scatter, so off NCCL the backward is an all-reduce followed by this rank's
    slice (cp times the traffic of a reduce-scatter, same result).
    """

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup) -> Tensor:
        ctx.group = group
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x, group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None]:
        group = ctx.group
        grad = grad.contiguous()
        if grad.is_cuda and "nccl" in str(dist.get_backend(group)):
            out = torch.empty_like(grad[0])
            dist.reduce_scatter_tensor(out.view(-1), grad.view(-1), group=group)
            return out, None
        dist.all_reduce(grad, group=group)
        return grad[dist.get_rank(group)].clone(), None


def _cp_gather_seq(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """All-gather the load-balanced local chunks [2c, ...] into sequence order [2*cp*c, ...]."""
    cp = dist.get_world_size(group)
    g = _AllGatherCP.apply(x, group)  # [cp, 2c, ...]
    g = g.view(cp, 2, x.size(0) // 2, *x.shape[1:])  # [rank, slot, c, ...]
    # Global chunk j is (rank j, slot 0) for j < cp, else (rank 2cp-1-j, slot 1).
    chunks = torch.cat([g[:, 0], g[:, 1].flip(0)], dim=0)  # [2cp, c, ...]
    return chunks.reshape(-1, *x.shape[1:])


def _cp_local_positions(s_local: int, cp: int, rank: int, device: torch.device) -> Tensor:
    """Global positions of this CP rank's tokens (chunks rank and 2*cp-1-rank, each s_local/2)."""
    c = s_local // 2
    idx = torch.arange(s_local, device=device)
    chunk = torch.where(idx < c, rank, 2 * cp - 1 - rank)
    return chunk * c + idx % c


class ContextParallelDotProductAttention(MegatronModule):
    """Megatron ``DotProductAttention`` (unfused, local spec) plus context parallelism and
    block-diagonal masks for packed sequences.

    Shapes: query [sq, b, np, hn], key/value [sk, b, ng, hn] (np % ng == 0) -> [sq, b, np*hn];
    packed 'thd' inputs are [t, n, hn] -> [t, np*hn]. A packed row (cu_seqlens) is attended one
    document at a time when it can be (CP=1, no explicit mask or window): the same result as the
    block-diagonal mask without its t x t scores (15x faster for 16 documents of 128 on CPU).
    With CP, sq/sk are the local lengths (two chunks each) and a given attention_mask is
    [b, 1, sq_local, sk_full] in true key order (what get_batch_on_this_cp_rank cuts from a full
    mask).
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: ProcessGroupCollection | None = None,
    ):
        super().__init__(config=config)
        if config.softmax_type != "vanilla":
            raise NotImplementedError(f"softmax_type={config.softmax_type!r} is not supported")
        self.config: TransformerConfig = config
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.attention_type = attention_type
        self.cp_comm_type = cp_comm_type  # K/V are always all-gathered, whatever is asked for

        tp_group = getattr(pg_collection, "tp", None)
        if tp_group is not None:
            self.tp_group = tp_group  # used by MegatronModule.sharded_state_dict
            tp_size = dist.get_world_size(tp_group)
        elif parallel_state.model_parallel_is_initialized():
            tp_size = parallel_state.get_tensor_model_parallel_world_size()
        else:
            tp_size = 1
        # Per-TP-rank counts as megatron derives them; forward itself follows the tensor shapes.
        self.num_attention_heads_per_partition = config.num_attention_heads // tp_size
        self.num_query_groups_per_partition = max(1, config.num_query_groups // tp_size)
        self.hidden_size_per_attention_head = config.kv_channels

        cp_group = getattr(pg_collection, "cp", None)
        if cp_group is None and config.context_parallel_size > 1:
            cp_group = parallel_state.get_context_parallel_group()
        self.cp_group: dist.ProcessGroup | None = cp_group

        if softmax_scale is None:
            softmax_scale = 1.0 / math.sqrt(self.hidden_size_per_attention_head)
        # Query-key layer scaling: scores are divided by layer_number in the matmul and
        # multiplied back in fp32 before the softmax (megatron's FusedScaleMaskSoftmax scale).
        self.coeff: int | None = self.layer_number if config.apply_query_key_layer_scaling else None
        self.softmax_scale = softmax_scale / (self.coeff or 1)
        self.window_size = (
            config.window_size
            if is_layer_window_attention(
                config.window_size, config.window_attn_skip_freq, layer_number
            )
            else None
        )
        p = config.attention_dropout if attention_dropout is None else attention_dropout
        self.attention_dropout = torch.nn.Dropout(p)
        # Packed rows attend one document at a time (False: one block-diagonal masked product).
        self.per_document = True

    def _cp_size(self) -> int:
        return 1 if self.cp_group is None else dist.get_world_size(self.cp_group)

    def _mask(
        self,
        sq: int,
        sk: int,
        attention_mask: Tensor | None,
        mask_type: AttnMaskType,
        packed: PackedSeqParams | None,
        device: torch.device,
    ) -> Tensor | None:
        """Boolean mask (True = masked) broadcastable to [b, np, sq, sk], or None."""
        cp = self._cp_size()
        if cp > 1:
            q_pos = _cp_local_positions(sq, cp, dist.get_rank(self.cp_group), device)
        else:  # bottom-right aligned, as megatron's masks are (sq == 1 -> nothing masked)
            q_pos = torch.arange(sk - sq, sk, device=device)
        k_pos = torch.arange(sk, device=device)
        rel = k_pos[None, :] - q_pos[:, None]  # [sq, sk]
        mask = attention_mask
        if self.window_size is not None:  # megatron: sliding window replaces any other mask
            mask = (rel < -self.window_size[0]) | (rel > self.window_size[1])
        elif mask is None and mask_type in _CAUSAL:
            mask = rel > 0
        if packed is not None:
            cu_q = packed.cu_seqlens_q_padded
            cu_q = packed.cu_seqlens_q if cu_q is None else cu_q
            cu_k = packed.cu_seqlens_kv_padded
            cu_k = packed.cu_seqlens_kv if cu_k is None else cu_k
            seg_q = torch.bucketize(q_pos, cu_q[1:].to(device), right=True)
            seg_k = torch.bucketize(k_pos, cu_k[1:].to(device), right=True)
            cross_doc = seg_q[:, None] != seg_k[None, :]
            mask = cross_doc if mask is None else (mask | cross_doc)
        return mask

    def uses_sdpa(self, device: torch.device) -> bool:
        """torch's fused kernels (see the module docstring) for this device?"""
        if self.coeff is not None:
            return False
        backend = self.config.attention_backend
        if backend in (AttnBackend.flash, AttnBackend.fused):
            return True
        if backend in (AttnBackend.local, AttnBackend.unfused):
            return False
        return is_cuda(device)

    def _attend(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        mask_type: AttnMaskType,
        packed_seq_params: PackedSeqParams | None,
    ) -> Tensor:
        """Dense attention [sq, b, np, hn] x [sk, b, ng, hn] -> [sq, b, np * hv], as megatron's."""
        if self.uses_sdpa(query.device):
            return self._attend_sdpa(query, key, value, attention_mask, mask_type,
                                     packed_seq_params)
        sq, b, np_, hn = query.shape
        sk = key.size(0)
        rep = np_ // key.size(2)
        if rep > 1:  # GQA: [sk, b, ng, hn] -> [sk, b, np, hn]
            key = key.repeat_interleave(rep, dim=2)
            value = value.repeat_interleave(rep, dim=2)

        # Raw scores [b * np, sq, sk], as megatron computes them (baddbmm, beta=0).
        q = query.reshape(sq, b * np_, hn).transpose(0, 1)
        k = key.reshape(sk, b * np_, -1).permute(1, 2, 0)
        buf = torch.empty(b * np_, sq, sk, dtype=query.dtype, device=query.device)
        scores = torch.baddbmm(buf, q, k, beta=0.0, alpha=self.softmax_scale)
        scores = scores.view(b, np_, sq, sk)

        half = query.dtype in (torch.float16, torch.bfloat16)
        upcast = half and (self.config.attention_softmax_in_fp32 or self.coeff is not None)
        if upcast:
            scores = scores.float()
        if self.coeff is not None:
            scores = scores * self.coeff
        mask = self._mask(sq, sk, attention_mask, mask_type, packed_seq_params, query.device)
        if mask is not None:
            scores = scores.masked_fill(mask, _MASK_VALUE)
        probs = torch.softmax(scores, dim=-1)
        if upcast:
            probs = probs.to(query.dtype)

        if self.training and self.attention_dropout.p > 0:
            if self.config.sequence_parallel:
                probs = self.attention_dropout(probs)
            else:
                with tensor_parallel.get_cuda_rng_tracker().fork():
                    probs = self.attention_dropout(probs)

        # Context [b * np, sq, hv] -> [sq, b, np * hv]
        hv = value.size(-1)
        v = value.reshape(sk, b * np_, hv).transpose(0, 1)
        context = torch.bmm(probs.view(b * np_, sq, sk), v)
        context = context.view(b, np_, sq, hv).permute(2, 0, 1, 3).reshape(sq, b, np_ * hv)
        return context

    def _attend_sdpa(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        mask_type: AttnMaskType,
        packed_seq_params: PackedSeqParams | None,
    ) -> Tensor:
        """The same attention through `torch.nn.functional.scaled_dot_product_attention`."""
        sq, b, np_, _ = query.shape
        sk = key.size(0)
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, d]
        causal_only = (attention_mask is None and self.window_size is None
                       and packed_seq_params is None and self._cp_size() == 1)
        mask = None
        if not (causal_only and mask_type in _CAUSAL and sq == sk):
            masked = self._mask(sq, sk, attention_mask, mask_type, packed_seq_params, query.device)
            if masked is not None:  # megatron's fill value, so fully masked rows stay finite
                mask = torch.zeros(masked.shape, dtype=query.dtype, device=query.device)
                mask = mask.masked_fill(masked, _MASK_VALUE)
            causal_only = False
        dropout = self.attention_dropout.p if self.training else 0.0
        rng = contextlib.nullcontext()
        if dropout > 0 and not self.config.sequence_parallel:
            rng = tensor_parallel.get_cuda_rng_tracker().fork()
        with rng:
            context = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout,
                is_causal=causal_only and mask_type in _CAUSAL, scale=self.softmax_scale,
                enable_gqa=np_ != k.size(1))
        return context.permute(2, 0, 1, 3).reshape(sq, b, np_ * value.size(-1))

    def _document_segments(
        self,
        query: Tensor,
        key: Tensor,
        attention_mask: Tensor | None,
        packed: PackedSeqParams | None,
    ) -> list[tuple[int, int]] | None:
        """(start, end) of each packed document when attention may run per document: one row,
        one CP rank, self-attention with the same boundaries for queries and keys, and no
        explicit mask or sliding window (those take the block-diagonal mask path)."""
        if (packed is None or not self.per_document or self._cp_size() > 1
                or attention_mask is not None or self.window_size is not None
                or query.size(1) != 1 or key.size(0) != query.size(0)):
            return None
        cu_q = packed.cu_seqlens_q_padded
        cu_q = packed.cu_seqlens_q if cu_q is None else cu_q
        cu_k = packed.cu_seqlens_kv_padded
        cu_k = packed.cu_seqlens_kv if cu_k is None else cu_k
        if cu_q is None or (cu_k is not cu_q and not torch.equal(cu_q.cpu(), cu_k.cpu())):
            return None
        bounds = [b for b in cu_q.tolist() if 0 <= b <= query.size(0)]
        if not bounds or bounds[0] != 0:
            bounds = [0, *bounds]
        if bounds[-1] != query.size(0):  # tokens after the last boundary: one more segment
            bounds.append(query.size(0))
        return [(a, e) for a, e in zip(bounds[:-1], bounds[1:], strict=True) if e > a]

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
    ) -> Tensor:
        """Attention over the full (CP-gathered) key/value sequence for the local queries."""
        if attention_bias is not None:
            raise NotImplementedError("attention_bias is not supported")
        mask_type = self.attn_mask_type if attn_mask_type is None else attn_mask_type
        cp = self._cp_size()
        thd = packed_seq_params is not None and packed_seq_params.qkv_format == "thd"
        if thd:  # [t, n, hn] -> [t, 1, n, hn]
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if packed_seq_params is not None and (cp > 1 or query.size(1) != 1):
            raise NotImplementedError(
                "packed sequences are supported only with context_parallel_size == 1 and "
                "micro batch size 1"
            )
        if cp > 1:
            if key.size(0) != query.size(0) or query.size(0) % 2:
                raise ValueError(
                    "context parallel attention needs self-attention with an even local sequence "
                    "(2 chunks per rank, as get_batch_on_this_cp_rank makes)"
                )
            if key.shape[:-1] == value.shape[:-1]:  # one collective for K and V
                kv = _cp_gather_seq(torch.cat([key, value], dim=-1), self.cp_group)
                key, value = kv.split([key.size(-1), value.size(-1)], dim=-1)
            else:
                key = _cp_gather_seq(key, self.cp_group)
                value = _cp_gather_seq(value, self.cp_group)

        segments = self._document_segments(query, key, attention_mask, packed_seq_params)
        if segments is not None:  # one document at a time: no T x T scores for a packed row
            context = torch.cat([
                self._attend(query[a:e], key[a:e], value[a:e], None, mask_type, None)
                for a, e in segments
            ])
        else:
            context = self._attend(query, key, value, attention_mask, mask_type, packed_seq_params)
        return context.squeeze(1) if thd else context
