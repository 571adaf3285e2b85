"""Self-check of ContextParallelDotProductAttention on 2 CPU ranks (gloo).

Run: .venv/bin/torchrun --nproc-per-node 2 tests/distributed/scripts/check_cp_attention.py

1. CP=1 path == megatron's DotProductAttention (fp32 MHA/GQA, bf16, layer scaling, window,
   dropout) and == torch SDPA.
2. CP=2 output and q/k/v gradients == the CP=1 result on the full sequence (causal MHA, GQA,
   padding mask, no mask).
3. Packed sequences (thd and sbhd) == attention run per document; packed + CP=2 raises.
4. A tiny megatron GPTModel (local spec, rope) at CP=2 gives the CP=1 loss and gradients.
Prints "CP ATTENTION OK" and exits 0 only if every check passes.
"""

from __future__ import annotations

import importlib
import itertools
import os
import sys

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def attn_cls() -> type:
    """The class under test (imported once the repository is on sys.path)."""
    return importlib.import_module(
        "nemo_lite.llm.gpt.cp_attention"
    ).ContextParallelDotProductAttention


def CPAttn(*args, **kwargs):
    return attn_cls()(*args, **kwargs)


TOL = 1e-5
FAILS: list[str] = []


def log(msg: str) -> None:
    if dist.get_rank() == 0:
        print(msg, flush=True)


def check(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> None:
    diff = (got.float() - want.float()).abs().max().item()
    ok = diff <= tol
    if not ok:
        FAILS.append(f"rank{dist.get_rank()} {name}: max abs diff {diff:.3e} > {tol:.0e}")
    log(f"  {'ok ' if ok else 'BAD'} {name}: max abs diff {diff:.3e}")


def init(cp: int) -> None:
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(1, 1, context_parallel_size=cp)
    importlib.import_module("nemo_lite.lightning._cpu").apply()  # its rope_cp_index shim too
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    model_parallel_cuda_manual_seed(1234)


def cfg(np_: int = 4, ng: int = 4, hn: int = 8, cp: int = 1, **kw) -> TransformerConfig:
    return TransformerConfig(
        num_layers=1,
        hidden_size=np_ * hn,
        num_attention_heads=np_,
        num_query_groups=ng,
        kv_channels=hn,
        context_parallel_size=cp,
        use_cpu_initialization=True,
        hidden_dropout=0.0,
        attention_dropout=kw.pop("attention_dropout", 0.0),
        **kw,
    )


def qkv(s: int, b: int, np_: int, ng: int, hn: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(s, b, n, hn, generator=g).to(dtype) for n in (np_, ng, ng))
    w = torch.randn(s, b, np_ * hn, generator=g)
    return q, k, v, w


def run(mod, q, k, v, w, mask=None, **kw):
    """Output and q/k/v grads of loss = sum(out * w)."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = mod(q, k, v, mask, **kw)
    (out.float() * w).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


def local(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """This CP rank's chunks, as megatron.core.utils.get_batch_on_this_cp_rank slices them."""
    cp, r = ps.get_context_parallel_world_size(), ps.get_context_parallel_rank()
    chunks = x.chunk(2 * cp, dim=dim)
    return torch.cat([chunks[r], chunks[2 * cp - 1 - r]], dim=dim)


def check_cp1_vs_megatron() -> None:
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    log("CP=1 path vs megatron DotProductAttention / SDPA")
    cases = [
        ("fp32 MHA causal", {}, torch.float32),
        ("fp32 GQA np4 ng2 causal", {"ng": 2}, torch.float32),
        ("bf16 GQA causal", {"ng": 2, "bf16": True}, torch.bfloat16),
        (
            "fp16 qk-layer-scaling",
            {"fp16": True, "apply_query_key_layer_scaling": True},
            torch.float16,
        ),
        ("fp32 window (3, 0)", {"window_size": (3, 0)}, torch.float32),
        ("fp32 dropout 0.3 (tracker fork)", {"attention_dropout": 0.3}, torch.float32),
    ]
    for name, kw, dtype in cases:
        ng = kw.pop("ng", 4)
        c = cfg(ng=ng, **kw)
        ours = CPAttn(c, 2, AttnMaskType.causal, "self")
        ref = DotProductAttention(c, 2, AttnMaskType.causal, "self")
        ours.train(), ref.train()
        q, k, v, w = qkv(16, 2, 4, ng, 8, dtype)
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(1234)
        a = run(ours, q, k, v, w)
        model_parallel_cuda_manual_seed(1234)
        b = run(ref, q, k, v, w)
        for t, x, y in zip(("out", "dq", "dk", "dv"), a, b, strict=True):
            check(f"{name} {t}", x, y, tol=0.0)
    # Independent reference: torch SDPA (causal, GQA).
    q, k, v, w = qkv(16, 2, 4, 2, 8)
    a = run(CPAttn(cfg(ng=2), 1, AttnMaskType.causal, "self"), q, k, v, w)
    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    o = (
        torch.nn.functional.scaled_dot_product_attention(
            qs.permute(1, 2, 0, 3),
            ks.repeat_interleave(2, 2).permute(1, 2, 0, 3),
            vs.repeat_interleave(2, 2).permute(1, 2, 0, 3),
            is_causal=True,
        )
        .permute(2, 0, 1, 3)
        .reshape(16, 2, 32)
    )
    (o * w).sum().backward()
    want = (o.detach(), qs.grad, ks.grad, vs.grad)
    for t, x, y in zip(("out", "dq", "dk", "dv"), a, want, strict=True):
        check(f"SDPA GQA causal {t}", x, y)


def check_cp2() -> None:
    log("CP=2 vs CP=1 on the full sequence")
    s, b = 16, 2
    g = torch.Generator().manual_seed(7)
    pad = torch.rand(b, 1, s, s, generator=g) < 0.3
    pad[..., 0] = False  # every query sees at least one key
    cases = [
        ("causal MHA", 4, AttnMaskType.causal, None),
        ("causal GQA np4 ng2", 2, AttnMaskType.causal, None),
        ("padding mask GQA", 2, AttnMaskType.padding, pad),
        ("no mask", 4, AttnMaskType.no_mask, None),
    ]
    for name, ng, mtype, mask in cases:
        q, k, v, w = qkv(s, b, 4, ng, 8, seed=3)
        ref = run(CPAttn(cfg(ng=ng), 1, mtype, "self"), q, k, v, w, mask)
        cp_mod = CPAttn(cfg(ng=ng, cp=2), 1, mtype, "self")
        lmask = None if mask is None else local(mask, dim=2)
        got = run(cp_mod, local(q), local(k), local(v), local(w), lmask)
        for t, x, y in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
            check(f"{name} {t}", x, local(y))


def check_packed() -> None:
    log("packed sequences (CP=1)")
    c1 = cfg(ng=2)
    mod = CPAttn(c1, 1, AttnMaskType.causal, "self")
    lens = [5, 7, 4]
    cu = torch.tensor([0, 5, 12, 16], dtype=torch.int32)
    q, k, v, w = qkv(16, 1, 4, 2, 8, seed=5)
    # Reference: each document on its own.
    parts = [run(mod, *(t[a:e] for t in (q, k, v, w))) for a, e in itertools.pairwise(cu)]
    ref = [torch.cat([p[i] for p in parts]) for i in range(4)]
    for fmt in ("sbhd", "thd"):
        psp = PackedSeqParams(
            qkv_format=fmt,
            cu_seqlens_q=cu,
            cu_seqlens_kv=cu,
            max_seqlen_q=max(lens),
            max_seqlen_kv=max(lens),
        )
        if fmt == "thd":
            got = run(mod, q[:, 0], k[:, 0], v[:, 0], w[:, 0], packed_seq_params=psp)
            got = [got[0].unsqueeze(1)] + [x.unsqueeze(1) for x in got[1:]]
        else:
            got = run(mod, q, k, v, w, packed_seq_params=psp)
        for t, x, y in zip(("out", "dq", "dk", "dv"), got, ref, strict=True):
            check(f"packed {fmt} {t}", x, y)
    try:
        CPAttn(cfg(cp=2), 1, AttnMaskType.causal, "self")(
            q[:8], q[:8], q[:8], None, packed_seq_params=PackedSeqParams(qkv_format="thd")
        )
        FAILS.append("packed + CP=2 did not raise")
    except NotImplementedError:
        log("  ok  packed + CP=2 raises NotImplementedError")


def gpt_loss_and_grads(cp: int, state: dict | None):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    init(cp)
    c = TransformerConfig(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        num_query_groups=2,
        use_cpu_initialization=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        context_parallel_size=cp,
    )
    spec = get_gpt_layer_local_spec()
    spec.submodules.self_attention.submodules.core_attention = attn_cls()
    model = GPTModel(c, spec, vocab_size=64, max_sequence_length=32, position_embedding_type="rope")
    if state is not None:
        model.load_state_dict(state)
    tokens = torch.randint(0, 64, (2, 33), generator=torch.Generator().manual_seed(11))
    batch = {
        "tokens": tokens[:, :-1],
        "labels": tokens[:, 1:],
        "position_ids": torch.arange(32).expand(2, 32),
    }
    if cp > 1:
        batch = {key: local(val, dim=1) for key, val in batch.items()}
    per_token = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
    loss = per_token.float().sum() / tokens[:, 1:].numel()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    if cp > 1:  # what DDP over the dp-cp group does: sum the CP ranks' contributions
        for t in grads.values():
            dist.all_reduce(t, group=ps.get_context_parallel_group())
        loss = loss.detach().clone()
        dist.all_reduce(loss, group=ps.get_context_parallel_group())
    return (
        loss.detach(),
        grads,
        {k: v.clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items()},
    )


def check_gpt() -> None:
    log("tiny GPTModel (local spec + rope, GQA) CP=2 vs CP=1")
    loss1, grads1, state = gpt_loss_and_grads(1, None)
    loss2, grads2, _ = gpt_loss_and_grads(2, state)
    check(f"GPT loss ({loss1.item():.6f})", loss2, loss1)
    worst = max(grads1, key=lambda n: (grads1[n] - grads2[n]).abs().max())
    check(f"GPT grads (worst: {worst})", grads2[worst], grads1[worst])


def main() -> None:
    dist.init_process_group("gloo")
    init(2)
    assert ps.get_context_parallel_world_size() == 2
    check_cp1_vs_megatron()
    check_cp2()
    check_packed()
    check_gpt()
    bad = [None] * dist.get_world_size()
    dist.all_gather_object(bad, FAILS)
    dist.destroy_process_group()
    failures = [f for fs in bad for f in fs]
    if failures:
        if int(os.environ.get("RANK", "0")) == 0:
            print("\n".join(failures), flush=True)
        sys.exit(1)
    if int(os.environ.get("RANK", "0")) == 0:
        print("CP ATTENTION OK", flush=True)


if __name__ == "__main__":
    main()
