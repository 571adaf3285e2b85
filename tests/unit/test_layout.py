"""Every layout error is raised with its numbers and fix, before any rank exists."""

import time

import pytest

from nemo_lite.lightning.layout import LayoutError, ParallelLayout


def test_world_size_must_hold_whole_replicas():
    with pytest.raises(LayoutError, match=r"world size 6 is not divisible by .* = 4"):
        ParallelLayout(tensor_model_parallel_size=2, pipeline_model_parallel_size=2).validate_world(6)


def test_context_parallel_counts_in_ranks_per_replica():
    with pytest.raises(LayoutError, match=r"context \(2\) parallel = 4"):
        ParallelLayout(tensor_model_parallel_size=2, context_parallel_size=2).validate_world(2)


@pytest.mark.parametrize(
    "layout, shapes, message",
    [
        (dict(tensor_model_parallel_size=3), dict(num_layers=4, num_attention_heads=4),
         r"num_attention_heads=4 is not divisible by tensor_model_parallel_size=3"),
        (dict(tensor_model_parallel_size=4), dict(num_layers=4, num_attention_heads=8, num_query_groups=2),
         r"num_query_groups=2 is not divisible by tensor_model_parallel_size=4"),
        (dict(pipeline_model_parallel_size=3), dict(num_layers=4, num_attention_heads=4),
         r"num_layers=4 is not divisible by pipeline \(3\) = 3 stages"),
        (dict(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=4),
         dict(num_layers=4, num_attention_heads=4),
         r"pipeline \(2\) x virtual pipeline \(4\) = 8 stages"),
        (dict(context_parallel_size=2), dict(num_layers=4, num_attention_heads=4, seq_length=30),
         r"seq_length=30 is not divisible by 2 x context_parallel_size = 4"),
        (dict(expert_model_parallel_size=3), dict(num_layers=4, num_attention_heads=4, num_moe_experts=8),
         r"num_moe_experts=8 is not divisible by expert_model_parallel_size=3"),
        (dict(expert_model_parallel_size=2), dict(num_layers=4, num_attention_heads=4),
         r"model has no experts"),
        (dict(tensor_model_parallel_size=2), dict(num_layers=4, num_attention_heads=4, num_moe_experts=4),
         r"needs sequence_parallel=True"),
    ],
)
def test_model_shapes_must_split(layout, shapes, message):
    with pytest.raises(LayoutError, match=message):
        ParallelLayout(**layout).validate_model(**shapes)


def test_sequence_parallel_needs_tensor_parallel():
    with pytest.raises(LayoutError, match=r"sequence_parallel=True needs tensor parallelism"):
        ParallelLayout(sequence_parallel=True).validate_sizes()


def test_virtual_pipeline_needs_pipeline():
    with pytest.raises(LayoutError, match=r"needs pipeline parallelism"):
        ParallelLayout(virtual_pipeline_model_parallel_size=2).validate_sizes()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_sizes_must_be_positive_integers(bad):
    with pytest.raises(LayoutError, match="must be an integer >= 1"):
        ParallelLayout(tensor_model_parallel_size=bad).validate_sizes()


def test_global_batch_must_split_over_micro_batches_and_dp():
    layout = ParallelLayout(tensor_model_parallel_size=2)
    assert layout.validate_batch(world_size=4, global_batch_size=8, micro_batch_size=2) == 2
    with pytest.raises(LayoutError, match=r"global_batch_size=6 is not divisible by .* = 4"):
        layout.validate_batch(world_size=4, global_batch_size=6, micro_batch_size=2)


def test_interleaved_schedule_needs_microbatches_multiple_of_pp():
    layout = ParallelLayout(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2)
    with pytest.raises(LayoutError, match=r"multiple of pipeline_model_parallel_size=2"):
        layout.validate_batch(world_size=2, global_batch_size=6, micro_batch_size=2)


def test_expert_tp_below_tp_without_ep_is_refused():
    layout = ParallelLayout(tensor_model_parallel_size=2, sequence_parallel=True,
                            expert_tensor_parallel_size=1)
    with pytest.raises(LayoutError, match="silently wrong"):
        layout.validate_model(num_layers=2, num_attention_heads=4, num_moe_experts=4)


def test_valid_layout_passes_every_check():
    layout = ParallelLayout(tensor_model_parallel_size=2, pipeline_model_parallel_size=2,
                            virtual_pipeline_model_parallel_size=2, sequence_parallel=True)
    layout.validate_world(8)
    layout.validate_model(num_layers=8, num_attention_heads=4, num_query_groups=2, seq_length=64)
    assert layout.validate_batch(world_size=8, global_batch_size=16, micro_batch_size=2) == 4


@pytest.mark.parametrize(
    "strategy_kwargs, devices, message",
    [
        (dict(tensor_model_parallel_size=4), 2, r"world size 2 is not divisible"),
        (dict(tensor_model_parallel_size=2), 2, r"num_attention_heads=3 is not divisible"),
        (dict(), 2, r"global_batch_size=3 is not divisible"),
    ],
)
def test_trainer_fit_refuses_bad_layout_before_spawning(strategy_kwargs, devices, message):
    from nemo_lite import lightning as nl
    from nemo_lite import llm

    heads = 3 if "num_attention_heads=3" in message else 4
    gbs = 3 if "global_batch_size=3" in message else 4
    trainer = nl.Trainer(strategy=nl.MegatronStrategy(**strategy_kwargs), devices=devices,
                         accelerator="cpu", max_steps=1)
    model = llm.GPTModel(llm.GPTConfig(num_layers=2, hidden_size=48, num_attention_heads=heads,
                                       seq_length=32))
    data = llm.MockDataModule(seq_length=32, global_batch_size=gbs, micro_batch_size=1)
    started = time.monotonic()
    with pytest.raises(LayoutError, match=message):
        trainer.fit(model, data)
    assert time.monotonic() - started < 5, "the error must come before any rank is launched"
