"""`nemo llm import` / `nemo llm export` (NeMo 2.0's commands, NeMo-Run's key=value form)."""

from __future__ import annotations

import pytest

from tests._support.hf_models import tiny_model
from tests.cli.test_cli import cli


@pytest.mark.distributed  # three CLI processes
def test_import_then_export_through_the_cli(tmp_path):
    source = tiny_model(tmp_path, "qwen2")
    plan = cli("llm", "import", f"source=hf://{source}", "output_path=imported", "--dryrun", "-y",
               cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "Qwen2ForCausalLM, llama family" in plan.stdout and "parameters: " in plan.stdout
    assert not (tmp_path / "imported").exists()  # a dry run converts nothing
    done = cli("llm", "import", f"source=hf://{source}", "output_path=imported", "-y",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "imported" / "nemo_lite.json").is_file()
    back = cli("llm", "export", "path=imported", "target=hf", "output_path=exported", "-y",
               cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    assert {p.name for p in (tmp_path / "exported").iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json"}


@pytest.mark.parametrize("args,words", [
    (["source=hf:///nowhere/at/all"], "/nowhere/at/all: no such directory"),
    (["source=hf://org/not-cached"], "is not in the local Hugging Face cache"),
    (["source=hf://{source}", "model=llama3_8b"], "model=Llama3Config8B: num_layers=32"),
])
def test_bad_import_is_one_line_and_exit_2(tmp_path, args, words):
    source = tiny_model(tmp_path, "llama3")
    args = [a.replace("{source}", str(source)) for a in args]
    proc = cli("llm", "import", *args, "output_path=out", "-y", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
