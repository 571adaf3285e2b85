"""`nemo llm peft merge` and `llm.peft.export_lora`: a LoRA checkpoint as a full checkpoint,
and its adapters as Hugging Face PEFT files, both checked against transformers.

Per family (Llama: fused QKV and [gate; up] split per Hugging Face linear; GPT-2: Conv1D,
`fan_in_fan_out`; Llama with DoRA: the magnitudes too, `use_dora`), one subprocess (tests/hf/scripts/finetune_e2e.py) imports a tiny random
model, LoRA-fine-tunes it, exports the adapters (`export_lora`), the merged model
(`export_ckpt`) and the base model. Here `peft.PeftModel` loads the adapters onto the exported
base, and the merged checkpoint written by the CLI is read back at TP 2 (tests/hf/scripts/logits.py):
both give transformers' logits of the merged export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._support.data import sft_dir
from tests._support.hf_models import VOCAB, tiny_model
from tests._support.ranks import torchrun
from tests.cli.test_cli import cli

SCRIPT = Path(__file__).parent / "scripts" / "finetune_e2e.py"
ROOT = Path(__file__).parents[2]


# run -> (Hugging Face family, GPU recipe, peft_scheme)
RECIPES = {"llama3": ("llama3", "llama3_8b", "lora"), "gpt2": ("gpt2", "gpt_126m", "lora"),
           "llama3-dora": ("llama3", "llama3_8b", "dora")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """run -> (work dir, the script's paths): each fine-tuned once for the module."""
    done = {}
    for name, (family, recipe, scheme) in RECIPES.items():
        work = tmp_path_factory.mktemp(f"peft_{name}")
        source = tiny_model(work, family)
        proc = subprocess.run([sys.executable, str(SCRIPT), str(work), str(source),
                               str(sft_dir(work)), recipe, "6", scheme],
                              capture_output=True, text=True, timeout=600, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "2"})
        assert proc.returncode == 0, proc.stderr[-4000:]
        lines = proc.stdout.strip().splitlines()
        done[name] = work, {k: Path(v) for k, v in json.loads(lines[-1]).items()}
    return done


def checkpoint_keys(path: Path) -> set[str]:
    from torch.distributed.checkpoint import FileSystemReader

    return set(FileSystemReader(str(path / "weights")).read_metadata().state_dict_metadata)


def hf_logits(model_dir: Path, tokens: torch.Tensor, adapter: Path | None = None) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.no_grad():
        return model(tokens).logits


def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", RECIPES)
def test_peft_loads_the_exported_adapters_with_the_same_logits(runs, family):
    from safetensors import safe_open

    _, paths = runs[family]
    ids = tokens()
    merged = hf_logits(paths["exported"], ids)  # export_ckpt: adapters merged in nemo_lite
    adapted = hf_logits(paths["base_hf"], ids, adapter=paths["adapter"])
    base = hf_logits(paths["base_hf"], ids)
    assert (merged - base).abs().max() > 1e-2  # the adapters matter...
    print(f"{family}: PEFT on the exported base vs the merged export: max |logit diff| "
          f"{float((adapted - merged).abs().max()):.2e} (logit scale "
          f"{float(merged.abs().max()):.2f}; the adapters move logits by up to "
          f"{float((merged - base).abs().max()):.2f})")
    assert (adapted - merged).abs().max() <= 1e-5 * max(1.0, float(merged.abs().max()))
    config = json.loads((paths["adapter"] / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    dora = RECIPES[family][2] == "dora"
    assert config["use_dora"] is dora
    with safe_open(paths["adapter"] / "adapter_model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert len(keys) == (3 if dora else 2) * len(config["target_modules"])  # A, B (, m)
    assert all(k.startswith("base_model.model.") and ".lora_" in k for k in keys)
    if dora:  # PEFT's own DoRA merge of our adapters gives our merged weights' logits
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base_model = AutoModelForCausalLM.from_pretrained(paths["base_hf"])
        merged_by_peft = PeftModel.from_pretrained(base_model, paths["adapter"]).merge_and_unload()
        with torch.no_grad():
            theirs = merged_by_peft.eval()(ids).logits
        print(f"{family}: PEFT's own DoRA merge vs ours: {float((theirs - merged).abs().max()):.2e}")
        assert (theirs - merged).abs().max() <= 1e-5 * max(1.0, float(merged.abs().max()))


@pytest.mark.parametrize("family", RECIPES)
def test_merged_checkpoint_is_a_full_checkpoint_with_the_adapted_logits(runs, family, tmp_path):
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_dir import read_manifest

    work, paths = runs[family]
    out = work / "merged"
    proc = cli("llm", "peft", "merge", "--path", str(paths["finetuned"]), "--output", str(out),
               "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_manifest(out)
    assert "model_part" not in manifest and manifest["merged_from"] == str(paths["finetuned"])
    assert not any(".adapter." in k for k in checkpoint_keys(out))
    assert load_context(out, subpath="model.model_transform") is None
    torch.save(tokens(), tmp_path / "tokens.pt")
    torchrun(2, str(ROOT / "tests" / "hf" / "scripts" / "logits.py"), str(tmp_path / "tokens.pt"),
             "2,1,0,1", str(out), str(tmp_path / "merged.pt"))
    ours = torch.load(tmp_path / "merged.pt")[..., :VOCAB]
    theirs = hf_logits(paths["exported"], tokens())
    print(f"{family}: merged checkpoint at TP2 vs transformers on the merged export: "
          f"{float((ours - theirs).abs().max()):.2e}")
    assert (ours - theirs).abs().max() <= 1e-5 * max(1.0, float(theirs.abs().max()))


@pytest.mark.parametrize("command,args,words", [
    ("merge", ["--path", "{imported}", "--output", "out"], "has no adapters"),
    ("export", ["--path", "{imported}", "--output", "out"], "has no adapters"),
    ("merge", ["--path", "{finetuned}"], "needs an output directory"),
    ("merge", ["--path", "{work}/nowhere", "--output", "out"], "no checkpoint at"),
    ("export", ["--path", "{finetuned}", "--output", "{work}"], "exists: remove it"),
    ("merge", ["--path"], "--path needs a value"),
])
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, command, args, words):
    work, paths = runs["llama3"]
    fill = {"{imported}": str(paths["imported"]), "{finetuned}": str(paths["finetuned"]),
            "{work}": str(work)}
    args = [fill.get(a, a.replace("{work}", str(work))) for a in args]
    proc = cli("llm", "peft", command, *args, "-y", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_adapters_of_a_model_without_a_hugging_face_form_are_refused(tmp_path):
    from nemo_lite import llm
    from nemo_lite.llm.peft.hf_adapter import _family
    from nemo_lite.llm.peft.saved import LoRACheckpoint, PEFTCheckpointError

    config = llm.GPTConfig(num_layers=2, hidden_size=64, num_attention_heads=4,
                           position_embedding_type="rope")
    with pytest.raises(PEFTCheckpointError, match="has no Hugging Face form"):
        _family(LoRACheckpoint(tmp_path, {}, None, config, {}, tmp_path / "out"))
