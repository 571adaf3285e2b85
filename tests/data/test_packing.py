"""Packing: every example once, rows within size, cu_seqlens / position ids / masks per document,
rows that collate, and the packed-batch checks of gpt_data_step."""

import json
import random

import pytest
import torch
from torch.utils.data import default_collate

from nemo_lite.llm.data.finetuning import load_examples
from nemo_lite.llm.data.packing import PackedRows, TokenizedExample, first_fit_decreasing
from nemo_lite.llm.gpt.steps import PackedBatchError, check_packed_batch, packed_seq_params
from nemo_lite.llm.tokenizer import ByteTokenizer

SEQ, SIZE = 48, 100


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    rng = random.Random(3)
    path = tmp_path_factory.mktemp("pack") / "sft.jsonl"
    with open(path, "w") as f:
        for _ in range(40):
            prompt = "".join(rng.choice("abcdef ") for _ in range(rng.randint(1, 20)))
            answer = "".join(rng.choice("uvwxyz ") for _ in range(rng.randint(0, 60)))
            f.write(json.dumps({"input": prompt, "output": answer}) + "\n")
    return load_examples(path, ByteTokenizer(), SEQ)


def segments(row):
    """(start, end) of each segment from the row's own cu_seqlens (-1 padding dropped)."""
    cu = [c for c in row["cu_seqlens"].tolist() if c >= 0]
    return list(zip(cu[:-1], cu[1:], strict=True))


def test_every_example_appears_once_with_its_own_tokens_labels_and_mask(examples):
    packed = PackedRows(examples, SIZE, pad_id=257)
    assert len(packed) < len(examples)
    found = []
    for i in range(len(packed)):
        row = packed[i]
        assert all(row[k].shape == (SIZE,) for k in ("tokens", "labels", "loss_mask"))
        for a, b in segments(row):
            if row["loss_mask"][a:b].sum() == 0 and set(row["tokens"][a:b].tolist()) == {257}:
                assert b == SIZE and row["position_ids"][a:b].eq(0).all()  # final padding
                continue
            assert row["position_ids"][a:b].tolist() == list(range(b - a))
            found.append((tuple(row["tokens"][a:b].tolist()), tuple(row["labels"][a:b].tolist()),
                          tuple(int(m) for m in row["loss_mask"][a:b].tolist())))
    expected = [(e.ids[:-1], e.ids[1:], e.loss_mask) for e in examples]
    assert sorted(found) == sorted(expected)


def test_cu_seqlens_cover_each_row_and_are_padded_to_one_length(examples):
    packed = PackedRows(examples, SIZE, pad_id=257)
    lengths = set()
    for i in range(len(packed)):
        row = packed[i]
        cu = row["cu_seqlens"]
        assert cu.dtype == torch.int32
        lengths.add(cu.numel())
        real = cu[cu >= 0]
        assert real[0] == 0 and real[-1] == SIZE and (real[1:] > real[:-1]).all()
        assert (cu[real.numel():] == -1).all()  # -1 only after the real boundaries
        assert int(row["max_seqlen"]) == int((real[1:] - real[:-1]).max())
    assert lengths == {packed.max_segments + 1}
    batch = default_collate([packed[0], packed[1]])  # fixed length: rows collate
    assert batch["cu_seqlens"].shape == (2, packed.max_segments + 1)


def test_padding_row_is_one_masked_segment(examples):
    packed = PackedRows(examples, SIZE, pad_id=257)
    row = packed.padding_row()
    assert row["loss_mask"].sum() == 0 and segments(row) == [(0, SIZE)]


def test_first_fit_decreasing_groups_within_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(1, 50) for _ in range(200)]
    rows = first_fit_decreasing(lengths, 64)
    assert sorted(i for r in rows for i in r) == list(range(200))
    assert all(sum(lengths[i] for i in r) <= 64 for r in rows)
    assert len(rows) >= -(-sum(lengths) // 64)  # never fewer than the volume allows
    assert first_fit_decreasing(lengths, 64) == rows  # deterministic
    with pytest.raises(ValueError, match="example 1 has 70 tokens.*packed_sequence_size"):
        first_fit_decreasing([3, 70], 64)


def test_tokenized_example_shape_is_checked():
    with pytest.raises(ValueError, match="one loss_mask entry per label"):
        TokenizedExample((1, 2, 3), (1,))


def test_packed_seq_params_drop_the_minus_one_padding(examples):
    row = PackedRows(examples, SIZE, pad_id=257)[0]
    batch = default_collate([row])
    params = packed_seq_params(batch["cu_seqlens"], batch["max_seqlen"])
    real = row["cu_seqlens"][row["cu_seqlens"] >= 0]
    assert params.qkv_format == "thd"
    assert params.cu_seqlens_q.tolist() == real.tolist() == params.cu_seqlens_kv.tolist()
    assert params.max_seqlen_q == int(row["max_seqlen"])


def test_packed_batches_need_one_row_and_no_context_parallelism():
    one = {"tokens": torch.zeros(1, 8, dtype=torch.int64)}
    check_packed_batch(one, cp_size=1)
    with pytest.raises(PackedBatchError, match="one row .* micro_batch_size=1"):
        check_packed_batch({"tokens": torch.zeros(2, 8, dtype=torch.int64)}, cp_size=1)
    with pytest.raises(PackedBatchError, match="context_parallel_size=2 are not supported"):
        check_packed_batch(one, cp_size=2)


@pytest.mark.parametrize("groups", [4, 2])
def test_cpu_attention_per_document_equals_block_diagonal_mask_and_sdpa(groups):
    """ContextParallelDotProductAttention on a packed THD row: per-document (default) and the
    block-diagonal masked product give each document's own causal attention (torch SDPA)."""
    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from nemo_lite.llm.gpt.cp_attention import ContextParallelDotProductAttention

    config = TransformerConfig(num_layers=1, hidden_size=32, num_attention_heads=4,
                               num_query_groups=groups, use_cpu_initialization=True,
                               attention_dropout=0.0)
    attention = ContextParallelDotProductAttention(config, 1, AttnMaskType.causal, "self")
    cu = torch.tensor([0, 5, 12, 13, 20], dtype=torch.int32)  # last segment: row padding
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                             max_seqlen_q=7, max_seqlen_kv=7)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(20, n, 8, generator=g) for n in (4, groups, groups))
    w = torch.randn(20, 32, generator=g)

    def run(fn):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fn(*x)
        (out * w).sum().backward()
        return [out.detach()] + [t.grad for t in x]

    def ours(per_document):
        attention.per_document = per_document
        return run(lambda a, b, c: attention(a, b, c, None, packed_seq_params=params))

    def reference(a, b, c):
        rep = 4 // groups
        outs = []
        for s, e in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
            qs, ks, vs = (t[s:e].transpose(0, 1) for t in (a, b.repeat_interleave(rep, 1),
                                                          c.repeat_interleave(rep, 1)))
            o = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True)
            outs.append(o.transpose(0, 1).reshape(e - s, 32))
        return torch.cat(outs)

    want = run(reference)
    for per_document in (True, False):
        for got, ref in zip(ours(per_document), want, strict=True):
            assert (got - ref).abs().max() < 1e-5
