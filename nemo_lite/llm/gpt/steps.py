"""The data step and forward step of a GPT model, run once per micro-batch inside Megatron's schedule.

Batch contract (what a data module yields, one micro-batch per item):
  tokens [b, s] int64, labels [b, s] int64, loss_mask [b, s] float, position_ids [b, s] int64,
  optionally attention_mask [b, 1, s, s] bool (True = masked) and, for packed sequences,
  cu_seqlens [n+1] int32 (document boundaries of the single packed row; b == 1).
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
    from megatron.core.utils import get_batch_on_this_cp_rank

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
    out = get_batch_on_this_cp_rank(out)
    if packed is not None:
        out["packed_seq_params"] = packed_seq_params(packed.to(device), batch.get("max_seqlen"))
    return out


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
