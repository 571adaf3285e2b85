"""The Megatron batch sampler: every DP layout sees the same global batches; resumable."""

import pytest

from nemo_lite.lightning.sampler import PAD_INDEX, MegatronPretrainingBatchSampler


def global_batches(dp: int, mbs: int = 2, gbs: int = 8, total: int = 32, consumed: int = 0):
    per_rank = [list(MegatronPretrainingBatchSampler(total, consumed, mbs, gbs, r, dp)) for r in range(dp)]
    micro_per_rank = gbs // (mbs * dp)
    steps = len(per_rank[0]) // micro_per_rank
    out = []
    for step in range(steps):
        chunk = slice(step * micro_per_rank, (step + 1) * micro_per_rank)
        out.append(sorted(i for rank in per_rank for mb in rank[chunk] for i in mb))
    return out


def test_every_data_parallel_size_sees_the_same_global_batches():
    reference = global_batches(dp=1)
    assert reference[0] == list(range(8))
    assert global_batches(dp=2) == reference
    assert global_batches(dp=4) == reference


def test_resume_continues_from_the_next_sample():
    assert global_batches(dp=2, consumed=16) == global_batches(dp=2)[2:]


def test_last_partial_batch_is_padded_not_dropped_when_asked():
    sampler = MegatronPretrainingBatchSampler(10, 0, 2, 8, 0, 1, drop_last=False)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8
    assert batches[-1] == [PAD_INDEX, PAD_INDEX] and batches[4] == [8, 9]
    assert len(MegatronPretrainingBatchSampler(10, 0, 2, 8, 0, 1, drop_last=True)) == 4


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="not divisible"):
        MegatronPretrainingBatchSampler(10, 0, 3, 8, 0, 2)
    with pytest.raises(ValueError, match="no samples"):
        MegatronPretrainingBatchSampler(0, 0, 2, 8, 0, 1)


def test_eval_limits_count_steps_however_often_the_strategy_sets_up():
    """fit then validate sets the strategy up twice: the trainer's limits are the user's steps
    times the micro-batches each time, never scaled twice, and the user's values are kept."""
    from types import SimpleNamespace

    from nemo_lite.lightning.sampler import EvalLimits, count_eval_limits_in_global_batches

    trainer = SimpleNamespace(limit_val_batches=3, limit_test_batches=0.5)
    kept = count_eval_limits_in_global_batches(trainer, 4)
    assert kept == EvalLimits(val=3, test=0.5)
    assert (trainer.limit_val_batches, trainer.limit_test_batches) == (12, 0.5)
    assert count_eval_limits_in_global_batches(trainer, 4, kept) == kept
    assert (trainer.limit_val_batches, trainer.limit_test_batches) == (12, 0.5)
