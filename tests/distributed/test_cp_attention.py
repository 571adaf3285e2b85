"""ContextParallelDotProductAttention: equal to megatron's local attention at CP=1 (MHA, GQA,
bf16, fp16, sliding window, dropout), to the full-sequence result at CP=2 (outputs and
q/k/v gradients), and block-diagonal for packed sequences. The checks live in the script."""

import pytest

from tests._support.ranks import torchrun

pytestmark = pytest.mark.distributed


def test_cp_attention_matches_reference_on_two_ranks():
    proc = torchrun(2, "check_cp_attention.py", timeout=300)
    assert "CP ATTENTION OK" in proc.stdout, proc.stdout[-4000:]
