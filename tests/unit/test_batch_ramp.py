"""The ramp-up batch size rules (nemo_lite/lightning/batch_ramp.py): megatron's sizes, the
consumed-sample count through the ramp, and clear errors for ramps that cannot run."""

from __future__ import annotations

import pytest

from nemo_lite.lightning.batch_ramp import BatchRamp, RampError
from nemo_lite.lightning.sampler import MegatronPretrainingBatchSampler


def test_sizes_follow_megatrons_rampup_calculator():
    calculators = pytest.importorskip("megatron.core.num_microbatches_calculator")
    if not hasattr(calculators, "RampupBatchsizeNumMicroBatchesCalculator"):
        pytest.skip("this megatron-core has no RampupBatchsizeNumMicroBatchesCalculator (0.19+)")
    for start, increment, samples, gbs in [(4, 4, 48, 16), (8, 8, 1000, 64), (2, 2, 7, 10),
                                           (16, 16, 100, 128)]:
        ramp = BatchRamp.parse([start, increment, samples], gbs)
        megatron = calculators.RampupBatchsizeNumMicroBatchesCalculator(
            gbs, 1, 1, False, 1, start, increment, samples)
        for consumed in range(0, 3 * samples + 50):
            megatron.update(consumed, consistency_check=False)
            assert ramp.global_batch_at(consumed) == megatron.get_current_global_batch_size(), (
                (start, increment, samples, gbs), consumed)


def test_steps_consume_the_ramp_then_the_full_batch():
    ramp = BatchRamp.parse([4, 4, 48], 16)
    sizes, consumed = [], 0
    for _ in range(10):
        sizes.append(ramp.global_batch_at(consumed))
        consumed += sizes[-1]
    assert sizes == [4, 4, 4, 4, 8, 8, 12, 12, 16, 16]
    assert ramp.consumed_after(10) == sum(sizes) == 88
    assert ramp.consumed_after(10, from_step=3, from_consumed=12) == 88  # a resume mid-ramp
    assert "4 -> 16 by 4 over 48 samples (8 steps; micro-batches per step 1 -> 4)" in \
        ramp.describe(micro_batch_size=2, data_parallel_size=2)


def test_the_sampler_yields_whole_ramp_steps_and_stops_before_a_partial_one():
    ramp = BatchRamp.parse([4, 4, 48], 16)
    # 60 samples: steps of 4, 4, 4, 4, 8, 8, 12, 12 take 56; the next (16 at 56) does not fit
    ranks = [list(MegatronPretrainingBatchSampler(60, 0, 2, 16, rank, 2, ramp=ramp))
             for rank in range(2)]
    assert [len(r) for r in ranks] == [14, 14]  # 56 samples / (2 x 2) per micro-batch
    seen = sorted(i for r in ranks for batch in r for i in batch)
    assert seen == list(range(56))
    assert ranks[0][:2] == [[0, 1], [4, 5]] and ranks[1][:2] == [[2, 3], [6, 7]]
    # resumed after 3 steps (12 samples): the same windows from there
    resumed = list(MegatronPretrainingBatchSampler(60, 12, 2, 16, 0, 2, ramp=ramp))
    assert resumed == ranks[0][3:]


@pytest.mark.parametrize("ramp, gbs, words", [
    ([4, 4], 16, "give three integers [start, increment, ramp_samples]"),
    ("4,4,48", 16, "give three integers"),
    ([0, 4, 48], 16, "must each be >= 1"),
    ([16, 4, 48], 16, "not below global_batch_size=16"),
    ([4, 5, 48], 16, "global_batch_size - start = 12 is not a multiple of the increment 5"),
])
def test_bad_ramps_are_refused_with_the_fix(ramp, gbs, words):
    with pytest.raises(RampError, match=None) as error:
        BatchRamp.parse(ramp, gbs)
    assert words in str(error.value)


def test_a_ramp_that_does_not_split_over_the_ranks_is_refused():
    ramp = BatchRamp.parse([2, 2, 48], 16)
    with pytest.raises(RampError) as error:
        ramp.check(micro_batch_size=2, data_parallel_size=2)
    assert "global batch of 2, which micro_batch_size (2) x data parallel size (2) = 4" in \
        str(error.value) and "multiples of 4" in str(error.value)
    ramp.check(micro_batch_size=2, data_parallel_size=1)  # fine on one rank
    with pytest.raises(RampError, match="interleaved pipeline schedule needs a multiple of 2"):
        BatchRamp.parse([4, 4, 48], 16).check(micro_batch_size=4, data_parallel_size=1,
                                                microbatch_multiple=2)
