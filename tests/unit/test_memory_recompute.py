"""The `--dryrun` memory estimate with megatron's activation recompute settings.
(benchmarks/recompute_memory.py compares these figures with what torch's autograd holds.)"""

from __future__ import annotations

from nemo_lite import llm
from nemo_lite.llm.gpt.memory import estimate_memory

SHAPE = dict(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=64, vocab_size=258,
             hidden_dropout=0.0, attention_dropout=0.0)


def activations(**settings) -> float:
    config = llm.GPTConfig(**{**SHAPE, **settings})
    return estimate_memory(config, precision="32", micro_batch_size=2, num_microbatches=4,
                           flash_attention=False).activations


def test_recompute_shrinks_the_activation_estimate_as_the_paper_says():
    s, b, h, a = 64, 2, 64, 4
    base = s * b * h * 34 * 2  # 34 sbh at the paper's 16-bit bytes, doubled for fp32
    scores = a * s * s * b * 4  # the fp32 softmax output (no attention dropout)
    layer_input = s * b * h * 4
    assert activations() == 4 * (base + scores)
    # with attention dropout: its 1-byte mask and its fp32 output as well
    assert activations(attention_dropout=0.1) == 4 * (base + a * s * s * b * 9)
    # selective: no scores kept; one layer's recomputed in the backward pass
    assert activations(recompute_granularity="selective") == 4 * base + scores
    full = {"recompute_granularity": "full", "recompute_num_layers": 1}
    # uniform, 1 layer per unit: 4 stored inputs, plus one layer recomputed in the backward
    assert activations(**full, recompute_method="uniform") == 4 * layer_input + base + scores
    # block, the first 2 layers: 2 inputs and 2 whole layers stored; layers 3-4 are freed
    # before layers 1-2 are recomputed, so the stored part is the peak
    assert activations(**{**full, "recompute_num_layers": 2}, recompute_method="block") == \
        2 * layer_input + 2 * (base + scores)
