"""The core attention's two kernels agree: torch's scaled_dot_product_attention (chosen on CUDA
when transformer-engine is absent, or by attention_backend=flash) against megatron's explicit
score arithmetic, on CPU in fp32 to 1e-6: causal, GQA, an explicit padding mask, a sliding
window, packed rows (thd) attended per document, a decode step (sq < sk), and the gradients."""

from __future__ import annotations

import pytest
import torch
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.enums import AttnBackend, AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig

from nemo_lite.llm.gpt.cp_attention import ContextParallelDotProductAttention

HEADS, HEAD_DIM = 4, 16


def attention(backend: AttnBackend, groups: int = HEADS, window=None, **extra):
    config = TransformerConfig(num_layers=1, hidden_size=HEADS * HEAD_DIM,
                               num_attention_heads=HEADS, num_query_groups=groups,
                               attention_backend=backend, window_size=window,
                               attention_dropout=0.0, **extra)
    return ContextParallelDotProductAttention(config, layer_number=1,
                                              attn_mask_type=AttnMaskType.causal,
                                              attention_type="self")


def qkv(sq: int, sk: int, b: int, groups: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sq, b, HEADS, HEAD_DIM, generator=g, dtype=torch.float32).to(dtype)
    k = torch.randn(sk, b, groups, HEAD_DIM, generator=g, dtype=torch.float32).to(dtype)
    v = torch.randn(sk, b, groups, HEAD_DIM, generator=g, dtype=torch.float32).to(dtype)
    return [t.requires_grad_() for t in (q, k, v)]


def both(groups=HEADS, window=None, sq=32, sk=32, b=2, mask=None, packed=None,
         dtype=torch.float32, mask_type=None):
    outs, grads = [], []
    for backend in (AttnBackend.local, AttnBackend.flash):
        module = attention(backend, groups, window)
        assert module.uses_sdpa(torch.device("cpu")) is (backend == AttnBackend.flash)
        q, k, v = qkv(sq, sk, b, groups, dtype)
        args = (q, k, v) if packed is None else (q[:, 0], k[:, 0], v[:, 0])
        out = module(*args, attention_mask=mask, attn_mask_type=mask_type,
                     packed_seq_params=packed)
        out.float().pow(2).sum().backward()
        outs.append(out.detach().float())
        grads.append([t.grad.float() for t in (q, k, v)])
    return outs, grads


def assert_same(outs, grads, tol=1e-6):
    (a, b) = outs
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=tol, atol=tol), (a - b).abs().max()
    for ga, gb in zip(*grads, strict=True):
        assert torch.allclose(ga, gb, rtol=tol * 10, atol=tol * 10), (ga - gb).abs().max()


@pytest.mark.parametrize("groups", [HEADS, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_causal(groups):
    assert_same(*both(groups))


def test_padding_mask():
    mask = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    mask[1, :, :, 24:] = True  # the second row's last 8 keys are padding
    mask |= torch.ones(32, 32, dtype=torch.bool).triu(1)
    assert_same(*both(2, mask=mask, mask_type=AttnMaskType.padding_causal))


def test_sliding_window():
    assert_same(*both(2, window=(8, 0)))


def test_decode_step_attends_to_the_whole_cache():
    assert_same(*both(2, sq=1, sk=32))


def test_packed_rows_per_document():
    cu = torch.tensor([0, 5, 17, 32], dtype=torch.int32)
    packed = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=15, max_seqlen_kv=15)
    assert_same(*both(2, b=1, packed=packed))


def test_bf16_agrees_to_bf16_precision():
    outs, grads = both(2, dtype=torch.bfloat16)
    assert torch.allclose(outs[0], outs[1], rtol=2e-2, atol=2e-2)


def test_auto_picks_sdpa_on_cuda_only_and_layer_scaling_keeps_explicit_scores():
    auto = attention(AttnBackend.auto)
    assert auto.uses_sdpa(torch.device("cuda")) and not auto.uses_sdpa(torch.device("cpu"))
    assert not attention(AttnBackend.local).uses_sdpa(torch.device("cuda"))
    scaled = attention(AttnBackend.flash, apply_query_key_layer_scaling=True, fp16=True)
    assert not scaled.uses_sdpa(torch.device("cuda"))
