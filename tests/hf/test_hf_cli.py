"""`nemo llm import` / `nemo llm export` (NeMo 2.0's commands, NeMo-Run's key=value form)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests._support.hf_models import tiny_model
from tests.cli.test_cli import cli


@pytest.mark.distributed  # three CLI processes
def test_import_then_export_through_the_cli(tmp_path, monkeypatch):
    """A model in the local Hugging Face cache (hf://org/tiny) is imported under NEMO_HOME by
    default, and `nemo://org/tiny` names it afterwards."""
    repo = tmp_path / "cache" / "models--org--tiny"
    shutil.copytree(tiny_model(tmp_path, "qwen2"), repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NEMO_HOME", str(tmp_path / "nemo_home"))
    plan = cli("llm", "import", "source=hf://org/tiny", "--dryrun", "-y", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "Qwen2ForCausalLM, llama family" in plan.stdout and "parameters: " in plan.stdout
    assert not (tmp_path / "nemo_home").exists()  # a dry run converts nothing
    done = cli("llm", "import", "source=hf://org/tiny", "-y", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "nemo_home" / "models" / "org" / "tiny" / "nemo_lite.json").is_file()
    back = cli("llm", "export", "path=nemo://org/tiny", "target=hf", "output_path=exported", "-y",
               cwd=tmp_path)
    assert back.returncode == 0, back.stderr[-3000:]
    assert {p.name for p in (tmp_path / "exported").iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json"}


def test_nemo_paths_name_imported_models(tmp_path, monkeypatch):
    from nemo_lite.lightning import RestoreConfig
    from nemo_lite.lightning.checkpoint_dir import CheckpointError, resolve_checkpoint_path

    monkeypatch.setenv("NEMO_HOME", str(tmp_path))
    assert RestoreConfig(path="nemo://org/tiny").path == str(tmp_path / "models" / "org" / "tiny")
    assert resolve_checkpoint_path("/ckpts/step=10") == Path("/ckpts/step=10")
    for bad in ("nemo://", "nemo://org/../../etc"):
        with pytest.raises(CheckpointError, match="expected nemo://<org>/<name>"):
            resolve_checkpoint_path(bad)


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
