"""Hugging Face in, LoRA / DoRA fine-tuning through a GPU finetune recipe, Hugging Face out.

Usage: python finetune_e2e.py WORK HF_DIR SFT_DIR [RECIPE STEPS [PEFT_SCHEME]]
Imports HF_DIR (llm.import_ckpt), shrinks `llm.<RECIPE>.finetune_recipe` (llama3_8b) to the
imported model (its saved model config and tokenizer), one CPU rank, fp32, its PEFT_SCHEME
(lora, or dora) on SFT_DIR's jsonl for STEPS (16) steps, then exports the last checkpoint (adapters merged) to
WORK/exported, its adapters in PEFT's format to WORK/adapter (llm.peft.export_lora) and the
imported base back to Hugging Face at WORK/base_hf. Prints the paths as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fiddle as fdl
import nemo_run as run

from nemo_lite import lightning as nl
from nemo_lite import llm
from nemo_lite.io import load_context
from recipes.sft_data import finetuning_data

SCHEMES = {"lora": "LoRA", "dora": "DoRA"}  # the recipe's peft_scheme -> its adapter


def main() -> None:
    work, hf_dir, sft = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    recipe_name, steps = (sys.argv[4], int(sys.argv[5])) if len(sys.argv) > 5 else (
        "llama3_8b", 16)
    scheme = sys.argv[6] if len(sys.argv) > 6 else "lora"
    imported = llm.import_ckpt(source=f"hf://{hf_dir}", output_path=str(work / "imported"))
    recipe = getattr(llm, recipe_name).finetune_recipe(
        name="e2e", dir=str(work / "runs"), num_nodes=1, num_gpus_per_node=1,
        checkpoint=str(imported), peft_scheme=scheme)
    recipe.model = load_context(imported, subpath="model", build=False)  # config + tokenizer
    recipe.trainer.accelerator = "cpu"
    recipe.trainer.strategy = run.Config(nl.MegatronStrategy, tensor_model_parallel_size=1)
    recipe.trainer.plugins = run.Config(nl.MegatronMixedPrecision, precision="32")
    recipe.trainer.max_steps = steps
    recipe.trainer.val_check_interval = steps
    recipe.trainer.limit_val_batches = 1
    recipe.log.ckpt.every_n_train_steps = steps
    recipe.optim.config.lr = 1e-2
    recipe.optim.lr_scheduler.warmup_steps = 2
    recipe.optim.lr_scheduler.max_steps = steps
    recipe.data = finetuning_data(
        dataset_root=sft, seq_length=64, global_batch_size=8, micro_batch_size=4,
        tokenizer=run.Config(llm.HFTokenizer, str(imported / "tokenizer")))
    assert fdl.get_callable(recipe.peft).__name__ == SCHEMES[scheme] and recipe.peft.dim == 8
    fdl.build(recipe)()
    last = sorted((work / "runs" / "e2e").rglob(f"step={steps}-*"))[-1]
    exported = llm.export_ckpt(str(last), target="hf", output_path=str(work / "exported"))
    adapter = llm.peft.export_lora(str(last), output_path=str(work / "adapter"))
    base_hf = llm.export_ckpt(str(imported), target="hf", output_path=str(work / "base_hf"))
    print(json.dumps({"imported": str(imported), "finetuned": str(last),
                      "exported": str(exported), "adapter": str(adapter),
                      "base_hf": str(base_hf)}))


if __name__ == "__main__":
    main()
