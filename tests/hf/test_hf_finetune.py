"""End to end: a Hugging Face model in, LoRA fine-tuning through the llama3_8b finetune recipe,
Hugging Face out (adapters merged), and transformers measures that it learned.

One subprocess (tests/hf/scripts/finetune_e2e.py) imports a tiny random Llama, fine-tunes it
with LoRA on an SFT jsonl and exports the last checkpoint; here transformers loads the original
and the export and computes both answer-only losses on the SFT examples.
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
from tests._support.hf_models import tiny_model

SCRIPT = Path(__file__).parent / "scripts" / "finetune_e2e.py"
ROOT = Path(__file__).parents[2]


def sft_loss(model_dir: Path, sft: Path) -> float:
    """transformers' mean loss on the answer tokens (+ eos) of the SFT examples, tokenized as
    the fine-tuning data module tokenizes them."""
    from transformers import AutoModelForCausalLM

    from nemo_lite.llm.data.finetuning import load_examples
    from nemo_lite.llm.tokenizer import HFTokenizer

    examples = load_examples(sft / "validation.jsonl", HFTokenizer(str(model_dir)), 64)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            ids = torch.tensor([example.ids])
            logits = model(ids[:, :-1]).logits[0]
            losses = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            mask = torch.tensor(example.loss_mask, dtype=torch.bool)
            total, count = total + losses[mask].sum().item(), count + int(mask.sum())
    return total / count


def test_import_lora_finetune_export_learns(tmp_path):
    from nemo_lite.lightning.checkpoint_dir import read_manifest

    source, sft = tiny_model(tmp_path, "llama3"), sft_dir(tmp_path)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), str(source), str(sft)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    paths = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = read_manifest(paths["finetuned"])
    assert manifest["model_part"] == "trainable"  # adapters only: export merged them
    before, after = sft_loss(source, sft), sft_loss(Path(paths["exported"]), sft)
    print(f"SFT answer loss in transformers: original {before:.3f}, fine-tuned + exported "
          f"{after:.3f}")
    assert after < 0.95 * before, (before, after)  # measured: 5.74 -> 5.04
    # the LoRA checkpoint generates directly (base + adapters applied): the same greedy ids as
    # transformers on the merged export
    from nemo_lite import llm
    from nemo_lite.llm.data.finetuning import load_examples
    from tests.inference.test_generate import PROMPTS, hf_greedy, params

    results = llm.generate(path=paths["finetuned"], prompts=PROMPTS,
                           inference_params=params(top_k=1))
    eos_id = llm.HFTokenizer(paths["exported"]).eos_id
    base_differs = False
    for result in results:
        ids, prompt = result.generated_tokens.tolist(), list(result.prompt_tokens)
        assert ids == hf_greedy(Path(paths["exported"]), prompt, eos_id), result.prompt
        base_differs |= ids != hf_greedy(source, prompt, eos_id)
    assert base_differs  # the adapters changed what the model says
    # chat=True on a checkpoint fine-tuned by FineTuningDataModule: the prompt is the ids that
    # module trains on before an answer (its chat format, tokenized piece by piece)
    conversation = [{"role": "system", "content": "Double it."},
                    {"role": "user", "content": "double 4?"}]
    (chat,) = llm.generate(path=paths["finetuned"], prompts=[conversation], chat=True,
                           inference_params=params(top_k=1))
    (tmp_path / "chat.jsonl").write_text(json.dumps(
        {"messages": [*conversation, {"role": "assistant", "content": "8"}]}) + "\n")
    (example,) = load_examples(tmp_path / "chat.jsonl", llm.HFTokenizer(paths["exported"]), 64)
    prompt = list(example.ids[:example.loss_mask.index(1) + 1])  # up to the first answer id
    assert list(chat.prompt_tokens) == prompt
    assert chat.generated_tokens.tolist() == hf_greedy(Path(paths["exported"]), prompt, eos_id)


def test_finetuning_data_must_use_the_models_tokenizer(tmp_path):
    """An imported model's tokenizer vs a data module left on the byte default: one error
    before training (its ids would mean other tokens to the model)."""
    from nemo_lite.llm.api import _check_same_tokenizer
    from nemo_lite.llm.tokenizer import ByteTokenizer, HFTokenizer
    from tests._support.hf_models import tokenizer_dir

    ours = HFTokenizer(str(tokenizer_dir(tmp_path)))
    with pytest.raises(ValueError, match=r"data's tokenizer \(ByteTokenizer, 258 ids\) is not "
                                         r"the model's \(HFTokenizer, 300 ids\)"):
        _check_same_tokenizer(ours, ByteTokenizer())
    _check_same_tokenizer(ours, HFTokenizer(str(tokenizer_dir(tmp_path))))  # same: accepted
