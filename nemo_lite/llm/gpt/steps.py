"""The data and forward steps of a GPT model, run once per micro-batch inside Megatron's schedule.

Batch contract (what a data module yields, one micro-batch per item):
  tokens [b, s] int64, labels [b, s] int64, loss_mask [b, s] float, position_ids [b, s] int64,
  optionally attention_mask [b, 1, s, s] bool (True = masked) and, for packed sequences,
  cu_seqlens [1, k] int32 (document boundaries of the single packed row, b == 1, padded with -1
  to a fixed k) and max_seqlen (longest document), which become megatron's PackedSeqParams
  ("thd"): transformer-engine's packed kernels on GPU, per-document attention on CPU. Packed rows
  are not split for context parallelism (refused with a clear error).
The first pipeline stage needs tokens/position_ids, the last needs labels/loss_mask.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from nemo_lite.lightning.device import compute_device

FIRST_STAGE_KEYS = ("tokens", "position_ids")
LAST_STAGE_KEYS = ("labels", "loss_mask")


def gpt_data_step(dataloader_iter: Iterator[Any]) -> dict[str, Any]:
    """Fetch one micro-batch; move only what this pipeline stage needs; slice it for CP."""
    from megatron.core import parallel_state

    from nemo_lite.lightning.mcore_compat import batch_on_this_cp_rank

    batch = next(dataloader_iter)
    if isinstance(batch, (tuple, list)):  # (batch, batch_idx, dataloader_idx) from Lightning
        batch = batch[0]
    wanted = {"attention_mask"}
    if parallel_state.is_pipeline_first_stage(ignore_virtual=True):
        wanted.update(FIRST_STAGE_KEYS)
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        wanted.update(LAST_STAGE_KEYS)
    # With virtual pipelining every stage may hold a first or last chunk.
    if parallel_state.get_virtual_pipeline_model_parallel_world_size():
        wanted.update(FIRST_STAGE_KEYS + LAST_STAGE_KEYS)
    device = compute_device()
    out: dict[str, Any] = {
        key: (value.to(device, non_blocking=True) if key in wanted and value is not None else None)
        for key, value in batch.items()
        if key not in ("cu_seqlens", "max_seqlen")
    }
    packed = batch.get("cu_seqlens")
    if packed is not None:
        check_packed_batch(batch, parallel_state.get_context_parallel_world_size())
    out = batch_on_this_cp_rank(out)
    if packed is not None:
        out["packed_seq_params"] = packed_seq_params(packed.to(device), batch.get("max_seqlen"))
    return out


class PackedBatchError(ValueError):
    """A packed micro-batch that this step cannot run (layout or parallelism)."""


def check_packed_batch(batch: dict[str, Any], cp_size: int) -> None:
    """Packed rows are one THD row per micro-batch, and are not split for context parallelism.

    get_batch_on_this_cp_rank would cut the row as one sequence, across documents; splitting
    each document instead (megatron's get_thd_batch_on_this_cp_rank) needs transformer-engine
    and documents padded to a multiple of 2 x CP, which the packer does not do yet.
    """
    tokens = batch.get("tokens")
    if tokens is not None and tokens.dim() == 2 and tokens.size(0) != 1:
        raise PackedBatchError(
            f"a packed micro-batch must hold one row (THD layout), got {tokens.size(0)}: "
            "set micro_batch_size=1 with packed sequences."
        )
    if cp_size > 1:
        raise PackedBatchError(
            f"packed sequences with context_parallel_size={cp_size} are not supported: use "
            "context_parallel_size=1, or unpacked data."
        )


def packed_seq_params(cu_seqlens: torch.Tensor, max_seqlen: Any = None):
    """Megatron's PackedSeqParams for one packed row (THD layout), ignoring -1 padding."""
    from megatron.core.packed_seq_params import PackedSeqParams

    cu = cu_seqlens.reshape(-1)
    cu = cu[cu >= 0].to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max()) if max_seqlen is None else int(max_seqlen)
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu,
        cu_seqlens_kv=cu,
        max_seqlen_q=longest,
        max_seqlen_kv=longest,
    )


def gpt_forward_step(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Run one model chunk: per-token losses [b, s] on the last stage, hidden states elsewhere."""
    kwargs: dict[str, Any] = {
        "input_ids": batch.get("tokens"),
        "position_ids": batch.get("position_ids"),
        "attention_mask": batch.get("attention_mask"),
        "labels": batch.get("labels"),
    }
    if batch.get("packed_seq_params") is not None:
        kwargs["packed_seq_params"] = batch["packed_seq_params"]
    return model(**kwargs)
