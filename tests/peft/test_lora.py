"""LoRA on one rank: the adapted model starts equal to the base, training moves only the
adapters (and the optimizer holds only them), the held-out loss falls, merging keeps the
outputs, checkpoints hold only adapter tensors and resume exactly, and bad use fails clearly.

One single-rank torchrun launch (tests/distributed/scripts/lora_run.py) trains a 2-layer GPT
for 2 steps (the "pretrained" checkpoint), fine-tunes it with llm.finetune(peft=LoRA()) for
12 steps from that checkpoint (RestoreConfig), resumes a copy from its step-6 checkpoint, and
tries two resumes that must fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from nemo_lite.llm.peft.lora import LoRA, LoRAConfigError
from tests._support.ranks import torchrun

TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
LAYERS = 2


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("lora")
    base = work / "base" / "checkpoints" / "step=2-consumed_samples=16"
    lora6 = work / "lora" / "checkpoints" / "step=6-consumed_samples=48"
    runs = [
        {"name": "base", "kind": "base", "steps": 2, "save_every": 2},
        {"name": "lora", "kind": "lora", "steps": 12, "lr": 1e-2, "save_every": 6,
         "restore": str(base), "merge_check": True},
        {"name": "resumed", "kind": "lora", "steps": 12, "lr": 1e-2, "save_every": 6,
         "resume": str(lora6)},
        {"name": "base_moved", "kind": "lora", "steps": 12, "lr": 1e-2, "resume": str(lora6),
         "manifest_edit": {"base_weights": str(work / "nowhere")}, "expect_error": True},
        {"name": "without_lora", "kind": "lora", "steps": 12, "lr": 1e-2, "resume": str(lora6),
         "peft": False, "expect_error": True},
    ]
    spec, out = work / "spec.json", work / "out.json"
    spec.write_text(json.dumps({"work": str(work), "runs": runs}))
    torchrun(1, "lora_run.py", str(spec), str(out))
    return work, json.loads(out.read_text())


def checkpoint_keys(path: Path) -> set[str]:
    from torch.distributed.checkpoint import FileSystemReader

    return set(FileSystemReader(str(path / "weights")).read_metadata().state_dict_metadata)


def test_adapted_model_equals_base_at_start(lora_runs):
    _, out = lora_runs
    assert out["lora"]["init_vs_base_max_diff"] == 0.0
    assert out["lora"]["held_out_loss_start"] == out["base"]["held_out_loss_end"]


def test_training_changes_only_the_adapters(lora_runs):
    _, out = lora_runs
    lora = out["lora"]
    assert lora["frozen_changed"] == []  # base weights bit-identical after 12 steps
    assert lora["trainable_unchanged"] == []
    assert len(lora["trainable"]) == LAYERS * len(TARGETS) * 2  # A and B per target
    assert all(".adapter.linear_in." in n or ".adapter.linear_out." in n
               for n in lora["trainable"])
    assert {n.split(".adapter.")[0].rsplit(".", 1)[1] for n in lora["trainable"]} == set(TARGETS)
    assert 0 < lora["trainable_numel"] < 0.2 * lora["total_params"]


def test_optimizer_holds_adapters_only(lora_runs):
    _, out = lora_runs
    assert out["lora"]["optimizer_holds_trainable_only"]
    assert out["lora"]["optimizer_params"] == len(out["lora"]["trainable"])


def test_held_out_loss_falls(lora_runs):
    _, out = lora_runs
    assert out["lora"]["held_out_loss_end"] < out["lora"]["held_out_loss_start"] - 0.01


def test_merge_keeps_the_outputs(lora_runs):
    _, out = lora_runs
    lora = out["lora"]
    assert lora["adapter_effect"] > 1e-2  # the adapters changed the outputs...
    assert lora["merge_max_diff"] <= 1e-5 * max(1.0, lora["merge_scale"])  # ...merge keeps them
    assert not lora["merged_has_adapters"]


def test_checkpoint_holds_adapter_tensors_only(lora_runs):
    work, _ = lora_runs
    base = work / "base" / "checkpoints" / "step=2-consumed_samples=16"
    for step in ("step=6-consumed_samples=48", "step=12-consumed_samples=96"):
        ckpt = work / "lora" / "checkpoints" / step
        keys = checkpoint_keys(ckpt)
        tensors = {k for k in keys if not k.startswith("rng_state")}
        assert tensors and all(".adapter.linear_" in k for k in tensors), sorted(tensors)
        model_keys = {k for k in tensors if not k.startswith("optimizer.")}
        assert len(model_keys) == len(TARGETS) * 2  # layers are stacked under one key
        manifest = json.loads((ckpt / "nemo_lite.json").read_text())
        assert manifest["model_part"] == "trainable"
        assert Path(manifest["base_weights"]) == base.resolve()
    base_keys = checkpoint_keys(base)
    assert "embedding.word_embeddings.weight" in base_keys
    assert not any(".adapter." in k for k in base_keys)


def test_resume_repeats_the_uninterrupted_run(lora_runs):
    _, out = lora_runs
    assert len(out["resumed"]["losses"]) == 6
    assert out["resumed"]["losses"] == pytest.approx(out["lora"]["losses"][6:], rel=1e-6)
    assert out["resumed"]["held_out_loss_end"] == pytest.approx(
        out["lora"]["held_out_loss_end"], rel=1e-6)
    assert out["resumed"]["frozen_changed"] == []


def test_resume_without_its_base_checkpoint_fails_clearly(lora_runs):
    work, out = lora_runs
    assert out["base_moved"]["error"] == "CheckpointError"
    assert "does not exist" in out["base_moved"]["message"]
    assert str(work / "nowhere") in out["base_moved"]["message"]


def test_resume_without_the_lora_transform_fails_clearly(lora_runs):
    _, out = lora_runs
    assert out["without_lora"]["error"] == "CheckpointError"
    assert "peft=LoRA" in out["without_lora"]["message"]


def test_bad_settings_raise():
    with pytest.raises(LoRAConfigError, match="positive"):
        LoRA(dim=0)
    with pytest.raises(LoRAConfigError, match="'pre' or 'post'"):
        LoRA(dropout_position="middle")


def fake_chunk(**config) -> types.SimpleNamespace:
    return types.SimpleNamespace(config=types.SimpleNamespace(**config))


def test_rank_must_split_over_tensor_parallel_ranks():
    chunk = fake_chunk(sequence_parallel=False, tensor_model_parallel_size=4)
    with pytest.raises(LoRAConfigError, match="divisible by the tensor-parallel size 4"):
        LoRA(dim=6)(chunk)


def test_configured_through_nemo_run_and_recorded():
    import fiddle as fdl
    import nemo_run as run

    lora = fdl.build(run.Config(LoRA, target_modules=["linear_qkv"], dim=4, alpha=8))
    assert (lora.target_modules, lora.dim, lora.alpha) == (["linear_qkv"], 4, 8)
    assert lora.__io__.arguments == {"target_modules": ["linear_qkv"], "dim": 4, "alpha": 8}


def test_import_loads_nothing_heavy():
    code = ("import sys; from nemo_lite.llm.peft import LoRA; LoRA(dim=4); "
            "print(sorted(m for m in ('torch', 'megatron', 'lightning') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_grouped_experts_are_refused_not_skipped():
    """Legacy GroupedMLP keeps every expert in one weight (`weight1`, `weight2`): LoRA cannot
    adapt it, and says so instead of leaving the experts without adapters."""
    import torch

    from nemo_lite.llm.peft.lora import _targets

    class GroupedExperts(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight1 = torch.nn.Parameter(torch.zeros(4, 8))
            self.weight2 = torch.nn.Parameter(torch.zeros(8, 4))

    model = torch.nn.Module()
    model.mlp = torch.nn.Module()
    model.mlp.experts = GroupedExperts()
    with pytest.raises(LoRAConfigError, match="moe_grouped_gemm=False"):
        _targets(model, ["linear_fc1", "linear_fc2"])
    assert _targets(model, ["linear_qkv"]) == []  # experts not targeted: nothing to refuse
