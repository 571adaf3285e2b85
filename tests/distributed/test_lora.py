"""LoRA at TP2, TP2+SP and PP2 (2 CPU ranks, gloo) matches LoRA at TP1 for the same weights.

The model is Llama-style (GQA, SwiGLU: linear_fc1 holds [gate; up] per TP rank, and the
adapter's B must follow that layout when resharded). A single-rank launch trains the base
model 2 steps (its checkpoint is the pretrained model) and fine-tunes it with LoRA for 6 steps,
saving at step 3. A two-rank launch then
(1) resumes TP1's step-3 LoRA checkpoint at TP2 (non-zero B, resharded; base weights from the
base checkpoint) for steps 4-6: TP1's losses; merges the adapters at TP2 and compares the
outputs; its step-6 checkpoint must hold adapter tensors only, with TP1's global shapes;
(2) fine-tunes the base from scratch at TP2 with sequence parallelism and (3) at PP2, 3 steps
each: the seeded adapters start the same in any layout, so the losses must be TP1's.
The same for a Mixtral-style MoE (4 SequentialMLP experts, every expert's linears adapted):
EP2 from scratch and EP2 resumed from EP1's step-3 checkpoint (experts' adapters moved across
ranks) give EP1's losses, and merging at EP2 keeps the outputs. And for DoRA (the magnitude
split with the rows of a column-parallel base, whole beside a row-parallel one): TP2 + SP from
scratch and TP2 resumed from TP1's step 3 give TP1's losses; the merge at TP2 is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._support.ranks import torchrun

pytestmark = pytest.mark.distributed

BASE = "base/checkpoints/step=2-consumed_samples=16"
STEP3 = "checkpoints/step=3-consumed_samples=24"
STEP6 = "checkpoints/step=6-consumed_samples=48"
MOE_BASE = "moe_base/checkpoints/step=2-consumed_samples=16"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("lora_tp")
    lora = {"kind": "lora", "model": "llama", "lr": 1e-2, "save_every": 3}
    moe = {**lora, "model": "moe"}
    dora = {**lora, "scheme": "dora"}
    tp1 = [
        {"name": "base", "kind": "base", "model": "llama", "steps": 2, "save_every": 2},
        {**lora, "name": "tp1", "steps": 6, "restore": str(work / BASE)},
        {"name": "moe_base", "kind": "base", "model": "moe", "steps": 2, "save_every": 2},
        {**moe, "name": "ep1", "steps": 6, "restore": str(work / MOE_BASE)},
        {**dora, "name": "dora_tp1", "steps": 6, "restore": str(work / BASE)},
    ]
    tp2 = [
        {**lora, "name": "tp2_resumed", "tp": 2, "steps": 6, "resume": str(work / "tp1" / STEP3),
         "merge_check": True},
        {**lora, "name": "tp2_sp", "tp": 2, "sp": True, "steps": 3, "restore": str(work / BASE),
         "merge_check": True},
        {**lora, "name": "pp2", "pp": 2, "steps": 3, "restore": str(work / BASE)},
        {**moe, "name": "ep2", "ep": 2, "steps": 3, "restore": str(work / MOE_BASE)},
        {**moe, "name": "ep2_resumed", "ep": 2, "steps": 6, "resume": str(work / "ep1" / STEP3),
         "merge_check": True},
        {**dora, "name": "dora_tp2_sp", "tp": 2, "sp": True, "steps": 3,
         "restore": str(work / BASE)},
        {**dora, "name": "dora_tp2_resumed", "tp": 2, "steps": 6,
         "resume": str(work / "dora_tp1" / STEP3), "merge_check": True},
    ]
    out = {}
    for nproc, spec in ((1, tp1), (2, tp2)):
        spec_file, out_file = work / f"spec{nproc}.json", work / f"out{nproc}.json"
        spec_file.write_text(json.dumps({"work": str(work), "runs": spec}))
        torchrun(nproc, "lora_run.py", str(spec_file), str(out_file))
        out.update(json.loads(out_file.read_text()))
    return work, out


def tensor_shapes(checkpoint: Path) -> dict[str, tuple]:
    from torch.distributed.checkpoint import FileSystemReader

    metadata = FileSystemReader(str(checkpoint / "weights")).read_metadata()
    return {k: tuple(v.size) for k, v in metadata.state_dict_metadata.items()
            if hasattr(v, "size")}


@pytest.mark.parametrize("name", ["tp2_sp", "pp2"])
def test_fresh_lora_matches_tp1(runs, name):
    _, out = runs
    assert out[name]["losses"] == pytest.approx(out["tp1"]["losses"][:3], rel=1e-5)
    assert out[name]["frozen_changed"] == []
    assert out[name]["optimizer_holds_trainable_only"]


def test_tp2_sp_starts_from_the_base_and_merges(runs):
    _, out = runs
    sp = out["tp2_sp"]
    assert sp["held_out_loss_start"] == pytest.approx(out["base"]["held_out_loss_end"], rel=1e-6)
    assert sp["adapter_effect"] > 1e-2
    assert sp["merge_max_diff"] <= 1e-5 * max(1.0, sp["merge_scale"])


def test_tp2_with_trained_adapters_matches_tp1(runs):
    _, out = runs
    assert out["tp2_resumed"]["losses"] == pytest.approx(out["tp1"]["losses"][3:], rel=1e-5)
    assert out["tp2_resumed"]["held_out_loss_end"] == pytest.approx(
        out["tp1"]["held_out_loss_end"], rel=1e-5)
    assert out["tp2_resumed"]["frozen_changed"] == []


def test_tp2_splits_the_adapters(runs):
    _, out = runs
    assert out["tp2_resumed"]["optimizer_holds_trainable_only"]
    # every adapter half is split over the 2 TP ranks: half of TP1's adapter elements each
    assert 2 * out["tp2_resumed"]["trainable_numel"] == out["tp1"]["trainable_numel"]


def test_merge_at_tp2_keeps_the_outputs(runs):
    _, out = runs
    resumed = out["tp2_resumed"]
    assert resumed["adapter_effect"] > 1e-2
    assert resumed["merge_max_diff"] <= 1e-5 * max(1.0, resumed["merge_scale"])
    assert not resumed["merged_has_adapters"]


def test_tp2_checkpoint_holds_adapters_only_with_global_shapes(runs):
    work, _ = runs
    tp2 = tensor_shapes(work / "tp2_resumed" / STEP6)
    tp1 = tensor_shapes(work / "tp1" / STEP6)
    assert tp2 and all(".adapter.linear_" in k for k in tp2), sorted(tp2)
    assert tp2 == tp1
    manifest = json.loads((work / "tp2_resumed" / STEP6 / "nemo_lite.json").read_text())
    assert manifest["model_part"] == "trainable"
    assert Path(manifest["base_weights"]) == (work / BASE).resolve()
    assert manifest["layout"]["tensor_model_parallel_size"] == 2


def test_every_expert_is_adapted(runs):
    _, out = runs
    experts = {n.split(".local_experts.")[1].split(".")[0] for n in out["ep1"]["trainable"]
               if ".local_experts." in n}
    assert experts == {"0", "1", "2", "3"}  # EP1 holds all 4; each adapted on fc1 and fc2
    fc = {n.split(".adapter.")[0].rsplit(".", 1)[1] for n in out["ep1"]["trainable"]
          if ".local_experts." in n}
    assert fc == {"linear_fc1", "linear_fc2"}
    # at EP2 each rank holds 2 experts: half the expert adapters, all the attention ones
    ep1, ep2 = out["ep1"]["trainable"], out["ep2"]["trainable"]
    assert sum(".local_experts." in n for n in ep2) * 2 == sum(".local_experts." in n for n in ep1)


def worst(losses: list[float], reference: list[float]) -> float:
    return max(abs(a - b) / abs(b) for a, b in zip(losses, reference, strict=True))


def test_expert_lora_at_ep2_matches_ep1(runs):
    _, out = runs
    print(f"expert LoRA, EP2 vs EP1: fresh {worst(out['ep2']['losses'], out['ep1']['losses'][:3]):.2e}"
          f", resumed {worst(out['ep2_resumed']['losses'], out['ep1']['losses'][3:]):.2e} (largest "
          f"relative loss difference); merge at EP2 {out['ep2_resumed']['merge_max_diff']:.2e}")
    assert out["ep2"]["losses"] == pytest.approx(out["ep1"]["losses"][:3], rel=1e-5)
    assert out["ep2"]["frozen_changed"] == [] and out["ep2"]["optimizer_holds_trainable_only"]
    resumed = out["ep2_resumed"]
    assert resumed["losses"] == pytest.approx(out["ep1"]["losses"][3:], rel=1e-5)
    assert resumed["held_out_loss_end"] == pytest.approx(out["ep1"]["held_out_loss_end"],
                                                         rel=1e-5)
    assert resumed["adapter_effect"] > 1e-2
    assert resumed["merge_max_diff"] <= 1e-5 * max(1.0, resumed["merge_scale"])


def test_dora_at_tp2_matches_tp1_and_merges_exactly(runs):
    _, out = runs
    tp1 = out["dora_tp1"]
    print(f"DoRA vs TP1: TP2+SP {worst(out['dora_tp2_sp']['losses'], tp1['losses'][:3]):.2e}, TP2 "
          f"resumed {worst(out['dora_tp2_resumed']['losses'], tp1['losses'][3:]):.2e}; merge at "
          f"TP2 {out['dora_tp2_resumed']['merge_max_diff']:.2e}; start vs base "
          f"{tp1['init_vs_base_max_diff']}")
    assert tp1["init_vs_base_max_diff"] == 0.0  # m = ||W||, B = 0: the base model exactly
    assert sum(n.endswith(".adapter.magnitude_delta") for n in tp1["trainable"]) == 8
    assert tp1["trainable_unchanged"] == []  # the magnitudes train too
    assert tp1["losses"] != pytest.approx(out["tp1"]["losses"], rel=1e-6)  # not LoRA's run
    assert out["dora_tp2_sp"]["losses"] == pytest.approx(tp1["losses"][:3], rel=1e-5)
    resumed = out["dora_tp2_resumed"]
    assert resumed["losses"] == pytest.approx(tp1["losses"][3:], rel=1e-5)
    assert resumed["held_out_loss_end"] == pytest.approx(tp1["held_out_loss_end"], rel=1e-5)
    assert resumed["frozen_changed"] == [] and resumed["optimizer_holds_trainable_only"]
    assert resumed["adapter_effect"] > 1e-2
    assert resumed["merge_max_diff"] <= 1e-5 * max(1.0, resumed["merge_scale"])
    assert not resumed["merged_has_adapters"]


@pytest.mark.parametrize("name,model,ep,dora", [("tp1", "llama", 1, False),
                                                ("ep1", "moe", 1, False), ("ep2", "moe", 2, False),
                                                ("dora_tp1", "llama", 1, True)])
def test_the_plan_counts_the_adapters_that_train(runs, name, model, ep, dora):
    """`--dryrun`'s memory estimate gives gradients and optimizer state to the adapters only:
    its adapter count is the trained parameters' (per rank)."""
    from nemo_lite import llm
    from nemo_lite.llm.gpt.memory import adapter_parameters_per_rank

    _, out = runs
    common = dict(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                  ffn_hidden_size=128)
    config = (llm.MixtralConfig(**common, moe_ffn_hidden_size=128, num_moe_experts=4)
              if model == "moe" else llm.LlamaConfig(**common))
    targets = ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    assert adapter_parameters_per_rank(config, 8, targets, magnitude=dora, ep=ep) == \
        out[name]["trainable_numel"]
