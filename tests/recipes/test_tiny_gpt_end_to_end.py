"""tiny_gpt's recipes end to end through the CLI on real files: pretrain on a megatron indexed
dataset (corpus -> BPE -> .bin/.idx with `nemo-lite data`), then LoRA fine-tuning on packed
SFT jsonl from that checkpoint. Two CPU ranks (TP=2), a few steps each."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed
BIN = Path(sys.executable).parent


def _run(*args: str, cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _losses(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"^step \d+/\d+ \| loss ([\d.]+)", text, re.M)]


def test_pretrain_on_indexed_data_then_lora_finetune_on_packed_sft(tmp_path):
    _run("nemo-lite", "data", "corpus", "--output", "corpus.jsonl", "--max-mb", "0.4",
         cwd=tmp_path)
    _run("nemo-lite", "data", "train-tokenizer", "--input", "corpus.jsonl", "--vocab-size", "512",
         "--output", "tok", cwd=tmp_path)
    _run("nemo-lite", "data", "preprocess", "--input", "corpus.jsonl", "--output-prefix",
         "stdlib", "--tokenizer", "tok", cwd=tmp_path)

    data = ("data=pretraining_data", "data.paths=[stdlib]", "data.seq_length=64",
            "data.global_batch_size=8", "data.micro_batch_size=2", "data.split='99,1,0'")
    pretrain = _run("nemo", "llm", "pretrain", "--factory", "tiny_gpt", *data,
                    "data.tokenizer=tok",
                    "trainer.max_steps=6", "log.log_dir=runs", "log.name=pre", "-y", cwd=tmp_path)
    losses = _losses(pretrain.stdout)
    assert len(losses) == 6 and losses[-1] < losses[0], pretrain.stdout[-2000:]
    (checkpoint,) = (tmp_path / "runs" / "pre").rglob("checkpoints/step=6-*")
    assert json.loads((checkpoint / "nemo_lite.json").read_text())["model_part"] == "all"

    sft = tmp_path / "sft"
    sft.mkdir()
    lines = [json.dumps({"input": f"{a} plus {b} is", "output": f" {a + b}."})
             for a in range(12) for b in range(12)]
    (sft / "training.jsonl").write_text("\n".join(lines) + "\n")
    finetune = _run("nemo", "llm", "finetune", "--factory",
                    f"tiny_gpt(checkpoint='{checkpoint}', dataset_root='{sft}', "
                    "packed_sequence=True)",
                    "model.tokenizer=tok",
                    "data.tokenizer=tok",
                    "log.log_dir=runs", "-y", cwd=tmp_path)
    losses = _losses(finetune.stdout)
    assert len(losses) == 10, finetune.stdout[-2000:]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the answers are learnt
    (lora,) = (tmp_path / "runs" / "finetune").rglob("checkpoints/step=10-*")
    manifest = json.loads((lora / "nemo_lite.json").read_text())
    assert manifest["model_part"] == "trainable"  # adapters only
    assert Path(manifest["base_weights"]).resolve() == checkpoint.resolve()
    size = sum(f.stat().st_size for f in (lora / "weights").rglob("*") if f.is_file())
    base = sum(f.stat().st_size for f in (checkpoint / "weights").rglob("*") if f.is_file())
    assert size < base / 2, (size, base)
