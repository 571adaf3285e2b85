"""MaskedTokenLossReduction: masked tokens, empty masks, and the DP reduction math."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nemo_lite.llm.loss import MaskedTokenLossReduction


def test_forward_sums_only_unmasked_tokens():
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss_sum, tokens, report = MaskedTokenLossReduction().forward({"loss_mask": mask}, losses)
    assert loss_sum.item() == pytest.approx(1.0 + 3.0 + 6.0)
    assert tokens.item() == 3 and tokens.dtype == torch.int
    assert report["loss_sum_and_tokens"].tolist() == [10.0, 3.0]


def test_backward_reaches_only_unmasked_positions():
    losses = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    loss_sum, _, _ = MaskedTokenLossReduction().forward({"loss_mask": mask}, losses)
    loss_sum.backward()
    assert losses.grad.tolist() == [[0.0, 1.0, 1.0]]


def test_empty_mask_contributes_nothing_and_never_divides_by_zero():
    red = MaskedTokenLossReduction()
    empty = red.forward({"loss_mask": torch.zeros(2, 4)}, torch.ones(2, 4))
    full = red.forward({"loss_mask": torch.ones(1, 4)}, torch.full((1, 4), 2.0))
    assert empty[0].item() == 0.0 and empty[1].item() == 0
    assert red.reduce([empty[2], full[2]]).item() == pytest.approx(2.0)
    assert red.reduce([empty[2]]).item() == 0.0  # all-masked step: 0, not nan
    assert red.reduce([]).item() == 0.0


def test_reduce_is_token_weighted_not_microbatch_mean():
    red = MaskedTokenLossReduction()
    a = red.forward({"loss_mask": torch.tensor([[1.0, 0.0, 0.0, 0.0]])}, torch.full((1, 4), 4.0))
    b = red.forward({"loss_mask": torch.ones(1, 4)}, torch.full((1, 4), 1.0))
    # (4*1 + 1*4) / 5 tokens, where a micro-batch mean would give (4 + 1) / 2
    assert red.reduce([a[2], b[2]]).item() == pytest.approx(8.0 / 5.0)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="per-token losses"):
        MaskedTokenLossReduction().forward({"loss_mask": torch.ones(2, 4)}, torch.ones(2, 3))


def _dp_worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    red = MaskedTokenLossReduction()
    # rank 0: 3 tokens of loss 1; rank 1: 1 token of loss 5 -> global mean (3 + 5) / 4 = 2
    if rank == 0:
        out = red.forward({"loss_mask": torch.tensor([[1.0, 1.0, 1.0, 0.0]])}, torch.ones(1, 4))
    else:
        out = red.forward({"loss_mask": torch.tensor([[0.0, 0.0, 0.0, 1.0]])}, torch.full((1, 4), 5.0))
    results[rank] = red.reduce([out[2]], group=dist.group.WORLD).item()
    dist.destroy_process_group()


def test_reduce_across_data_parallel_ranks_weights_by_tokens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_dp_worker, args=(port, results), nprocs=2, join=True)
    assert results[0] == pytest.approx(2.0) and results[1] == pytest.approx(2.0)
