"""Every GPU recipe trains, through its own strategy, DDP, optimizer and precision configs.

One torchrun launch of 2 CPU ranks (scripts/recipe_train.py) runs, for gpt_126m, llama3_8b,
llama3_70b and mixtral_8x7b, the pretrain recipe and then the finetune recipe from its final
checkpoint (peft_scheme None for gpt_126m, "lora" for llama3_8b, "dora" for the other two),
each shrunk in Python (sizes, layout to fit 2 ranks, accelerator) for 2 steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests._support.ranks import torchrun

pytestmark = pytest.mark.distributed

RECIPES = ["gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"]
SCRIPT = str(Path(__file__).parent / "scripts" / "recipe_train.py")  # absolute: used as is


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("recipes_train")
    out = work / "out.json"
    torchrun(2, SCRIPT, str(work / "runs"), str(out), timeout=900)
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_recipe_trains_two_steps_with_its_own_configs(results, name, stage):
    run = results[name][stage]
    assert len(run["losses"]) == 2 and all(math.isfinite(x) for x in run["losses"]), run
    assert run["precision"] == "bf16-mixed"
    # NeMo's GPU DDP: overlapped fp32 reduction, not averaged in the collective (per-token loss)
    assert run["ddp"] == {"overlap_grad_reduce": True, "overlap_param_gather": True,
                          "grad_reduce_in_fp32": True, "average_in_collective": False,
                          "use_distributed_optimizer": True}, run["ddp"]
    assert run["optimizer"]["distributed"] and run["optimizer"]["bf16"], run["optimizer"]
    assert run["async_save"] is True
    assert run["end"] != run["start"]  # the optimizer changed the weights


@pytest.mark.parametrize("name", RECIPES)
def test_finetune_recipe_starts_from_the_pretrained_weights(results, name):
    pre, fine = results[name]["pretrain"], results[name]["finetune"]
    assert fine["optimizer"]["lr"] < pre["optimizer"]["lr"]
    if fine["peft"] == "NoneType":  # full fine-tuning (peft_scheme=None)
        assert fine["start"] == pytest.approx(pre["end"], rel=1e-12), (pre, fine)
        return
    # peft_scheme="lora" (the default) / "dora": the frozen base is the pretrained model and
    # stays so; only the adapters train, on every attention and MLP linear (each expert's in MoE)
    assert fine["peft"] == {"llama3_8b": "LoRA"}.get(name, "DoRA"), fine["peft"]
    assert fine["optimizer"]["lr"] == 1e-4
    assert fine["frozen"][0] == pytest.approx(pre["end"], rel=1e-12), (pre, fine)
    assert fine["frozen"][1] == fine["frozen"][0]
    assert fine["trainable"][1] != fine["trainable"][0]
    mlp = (["mlp.experts.local_experts.*.linear_fc1", "mlp.experts.local_experts.*.linear_fc2"]
           if name == "mixtral_8x7b" else ["mlp.linear_fc1", "mlp.linear_fc2"])
    assert fine["adapted"] == sorted(["self_attention.linear_qkv", "self_attention.linear_proj",
                                      *mlp]), fine["adapted"]
