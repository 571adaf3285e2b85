"""The `--dryrun` memory estimate with megatron's activation recompute settings."""

from __future__ import annotations

from nemo_lite import llm
from nemo_lite.llm.gpt.memory import estimate_memory

SHAPE = dict(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=64, vocab_size=258)


def activations(**recompute) -> float:
    config = llm.GPTConfig(**SHAPE, **recompute)
    return estimate_memory(config, precision="32", micro_batch_size=2, num_microbatches=4,
                           flash_attention=False).activations


def test_recompute_shrinks_the_activation_estimate_as_the_paper_says():
    s, b, h, a = 64, 2, 64, 4
    full_layer = s * b * h * (34 + 5 * a * s / h) * 2  # fp32: twice the paper's 16-bit bytes
    layer_input = s * b * h * 4
    assert activations() == 4 * full_layer
    assert activations(recompute_granularity="selective") == 4 * s * b * h * 34 * 2
    full = {"recompute_granularity": "full", "recompute_num_layers": 1}
    # uniform, 1 layer per unit: 4 stored inputs, plus one layer recomputed in the backward
    assert activations(**full, recompute_method="uniform") == 4 * layer_input + full_layer
    # block, the first 2 layers: 2 inputs and 2 full layers stored, plus one being recomputed
    assert activations(**{**full, "recompute_num_layers": 2}, recompute_method="block") == \
        2 * layer_input + 2 * full_layer + 2 * full_layer
