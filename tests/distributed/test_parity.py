"""Parallel layouts give the same per-step losses as one process (fp32, 5 steps).

One process trains each reference model and saves its initial weights (sharded, megatron
dist_checkpointing); every layout starts from those weights, sees the same global batches,
and must match the reference losses to 1e-5 relative. Layouts that fit the same number of
ranks share one torchrun launch (process start-up dominates on CPU).
"""

from __future__ import annotations

import math

import pytest

from tests._support.ranks import run_layouts

pytestmark = pytest.mark.distributed

REFERENCES = [
    # validation after steps 2 and 4 on 20 samples: 2 full global batches
    # plus 4 samples padded with all-masked ones (the last batch is kept, not dropped)
    {"name": "gpt", "model": "gpt", "save_init": True, "val_every": 2, "val_samples": 20},
    {"name": "llama", "model": "llama", "save_init": True},
    {"name": "moe", "model": "moe", "save_init": True},
    # the byte tokenizer's 258 ids at megatron's default padding: 384 rows at TP1, 512 at TP2/4
    {"name": "gpt258", "model": "gpt", "vocab": 258, "save_init": True, "init": "gpt258"},
    {"name": "llama258", "model": "llama", "vocab": 258, "fresh": True},
]
V258 = {"vocab": 258, "init": "gpt258"}
FULL = {"recompute_granularity": "full", "recompute_num_layers": 1}
RECOMPUTE = [  # (layout, label, TransformerConfig fields)
    ("TP2", "full uniform", {**FULL, "recompute_method": "uniform"}),
    ("TP2", "selective", {"recompute_granularity": "selective"}),
    ("PP2", "full block", {**FULL, "recompute_method": "block"}),
    ("PP2", "selective", {"recompute_granularity": "selective"}),
]
TWO_RANKS = [
    {"name": "DP2", "model": "gpt", "val_every": 2, "val_samples": 20},
    {"name": "TP2", "model": "gpt", "tp": 2},
    {"name": "TP2+SP", "model": "gpt", "tp": 2, "sp": True},
    {"name": "PP2", "model": "gpt", "pp": 2, "val_every": 2, "val_samples": 20},
    {"name": "PP2+VPP2", "model": "gpt", "pp": 2, "vpp": 2},
    {"name": "CP2", "model": "gpt", "cp": 2},
    # torch's SDPA kernels (what a GPU without transformer-engine uses) against the reference's
    # explicit scores: the same model
    {"name": "CP2 sdpa", "model": "gpt", "cp": 2, "attention": "flash"},
    {"name": "llama-GQA TP2 sdpa", "model": "llama", "tp": 2, "attention": "flash"},
    {"name": "DP2+distopt", "model": "gpt", "dist_opt": True},
    {"name": "llama-GQA TP2", "model": "llama", "tp": 2},
    {"name": "EP2 alltoall", "model": "moe", "ep": 2},
    {"name": "EP2 allgather", "model": "moe", "ep": 2, "dispatcher": "allgather"},
    {"name": "TP2+EP2+SP", "model": "moe", "tp": 2, "ep": 2, "etp": 1, "sp": True},
    {"name": "bf16 TP2", "model": "gpt", "tp": 2, "precision": "bf16-mixed", "steps": 10},
    {"name": "fp16 DP2", "model": "gpt", "precision": "16-mixed", "steps": 12, "loss_scale": 2.0**14},
    # same seed, no shared checkpoint: padding must not change the initial weights either
    {"name": "vocab258 TP2 fresh", "model": "gpt", "tp": 2, "fresh": True, **V258},
    {"name": "vocab258 TP2+SP", "model": "gpt", "tp": 2, "sp": True, **V258},
    {"name": "vocab258 PP2", "model": "gpt", "pp": 2, **V258},
    {"name": "vocab258 llama TP2 fresh", "model": "llama", "tp": 2, "fresh": True, "vocab": 258},
    # activation recompute: megatron's full (uniform / block, N layers) and selective
    *[{"name": f"{base} recompute {label}", "model": "gpt", base.lower()[:2]: 2, "config": config}
      for base, label, config in RECOMPUTE],
]
FOUR_RANKS = [
    {"name": "TP2+PP2", "model": "gpt", "tp": 2, "pp": 2},
    {"name": "TP2+PP2+SP", "model": "gpt", "tp": 2, "pp": 2, "sp": True},
    # rank 3 holds padded rows only (258 of 512 rows, 128 per rank)
    {"name": "vocab258 TP4 fresh", "model": "gpt", "tp": 4, "fresh": True, **V258},
    {"name": "vocab258 TP4", "model": "gpt", "tp": 4, **V258},
]
PARITY = [r for r in TWO_RANKS + FOUR_RANKS if r.get("precision", "32") == "32"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("parity")
    init = work / "init"
    out = {"reference": run_layouts(1, REFERENCES, init, work)}
    out.update(run_layouts(2, TWO_RANKS, init, work))
    out.update(run_layouts(4, FOUR_RANKS, init, work))
    return out


def reference_name(run: dict) -> str:
    return run["model"] + ("258" if run.get("vocab") == 258 else "")


def test_padding_gives_no_probability_to_padded_ids(results):
    """At step 1 the model is untrained, so its loss is close to ln(real vocabulary) (258 ids),
    not ln(padded) (384 at TP1, 512 at TP2): the padded ids take no probability mass."""
    first = results["reference"]["gpt258"]["losses"][0]
    assert abs(first - math.log(258)) < 0.05, first
    assert abs(first - math.log(384)) > 0.3


def max_relative_difference(losses, reference):
    assert len(losses) == len(reference)
    return max(abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=False))


@pytest.mark.parametrize("run", PARITY, ids=[r["name"] for r in PARITY])
def test_layout_matches_single_process(results, run):
    reference = results["reference"][reference_name(run)]["losses"]
    losses = results[run["name"]]["losses"]
    diff = max_relative_difference(losses, reference)
    print(f"PARITY {run['name']:<16} max rel diff {diff:.2e}")
    assert diff <= 1e-5, f"{run['name']}: losses {losses} vs reference {reference}"


@pytest.mark.parametrize("name", ["DP2", "PP2"])
def test_validation_matches_single_process_including_padded_last_batch(results, name):
    reference = results["reference"]["gpt"]["val_losses"]
    val = results[name]["val_losses"]
    # validation after steps 2 and 4, 3 global batches each (the third one padded)
    assert len(reference) == 6, reference
    assert max_relative_difference(val, reference) <= 1e-5, (val, reference)
    assert sum(reference[3:]) < sum(reference[:3])


def test_training_reduces_the_loss(results):
    losses = results["reference"]["gpt"]["losses"]
    assert losses[-1] < losses[0] - 0.1


def test_bf16_mixed_runs_and_reduces_the_loss(results):
    losses = results["bf16 TP2"]["losses"]
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.3
    # bf16 stays close to the fp32 reference over the first steps
    fp32 = results["reference"]["gpt"]["losses"]
    assert max_relative_difference(losses[:5], fp32) < 1e-2


def test_fp16_loss_scaling_skips_overflow_steps_then_trains(results):
    run = results["fp16 DP2"]
    losses, updated = run["losses"], run["updated"]
    assert all(math.isfinite(x) for x in losses)
    assert not updated[0], "a 2^14 initial loss scale must overflow first and be backed off"
    assert sum(updated) >= 5, updated
    assert losses[-1] < losses[0] - 0.2


@pytest.mark.parametrize("base, label, config", RECOMPUTE, ids=[f"{b} {lab}" for b, lab, _ in RECOMPUTE])
def test_recompute_gives_the_losses_of_no_recompute(results, base, label, config):
    """Recompute runs the layers (full) or the core attention (selective) forward again in the
    backward pass; the losses equal the same layout's without it (fp32, 1e-6). The forward calls
    of rank 0's layers prove megatron did recompute: twice as many with full uniform (all 4
    layers of TP2, 1 per unit), 1.5x with full block (1 of PP2's 2 layers per stage), and twice
    the core attention calls with selective (megatron's default module, core_attn)."""
    plain, recomputed = results[base], results[f"{base} recompute {label}"]
    diff = max_relative_difference(recomputed["losses"], plain["losses"])
    print(f"RECOMPUTE {base} {label:<13} max rel diff {diff:.2e} forward calls "
          f"{recomputed['forward_calls']} vs {plain['forward_calls']}")
    assert diff <= 1e-6, (recomputed["losses"], plain["losses"])
    calls, base_calls = recomputed["forward_calls"], plain["forward_calls"]
    if label == "selective":
        assert calls == {"layer": base_calls["layer"],
                         "core_attention": 2 * base_calls["core_attention"]}, (calls, base_calls)
    else:
        ratio = 2 if label == "full uniform" else 1.5
        assert calls == {k: ratio * v for k, v in base_calls.items()}, (calls, base_calls)
