"""Hugging Face checkpoints in and out (llm.import_ckpt / llm.export_ckpt), checked by numbers.

For each family (tiny random models written locally with transformers): the imported model's
logits equal transformers' on the same tokens (fp32, max abs diff <= 1e-5 of the logit scale),
at TP1 here and at TP2, TP2+SP, PP2 (and EP2 for Mixtral) on CPU ranks; export -> transformers -> the same logits;
import -> export gives back the original tensors bit for bit. Bad input: one error naming
the file or tensor, nothing written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._support.hf_models import FAMILIES, VOCAB, tiny_model

SCRIPT = Path(__file__).parent / "scripts" / "logits.py"
TOL = 1e-5


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(3))


def hf_logits(directory: Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(tokens).logits


def nemo_logits(ckpt: Path, tokens: torch.Tensor) -> torch.Tensor:
    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_io import load_model_weights
    from nemo_lite.llm.hf.convert import single_rank

    config = load_context(ckpt, subpath="model.config")
    with single_rank():
        chunk = config.configure_model()
        load_model_weights([chunk], ckpt)
        chunk.eval()
        positions = torch.arange(tokens.shape[1]).unsqueeze(0).expand(tokens.shape[0], -1)
        with torch.no_grad():
            return chunk(input_ids=tokens, position_ids=positions, attention_mask=None)


def close(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| over the real vocabulary, as a fraction of the logit scale."""
    diff = (ours[..., :VOCAB] - reference).abs().max().item()
    return diff / reference.abs().max().item()


@pytest.fixture(scope="module")
def imported(work):
    from nemo_lite.llm.hf import import_ckpt

    out = {}
    for family in FAMILIES:
        source = tiny_model(work, family)
        out[family] = (source, import_ckpt(source=f"hf://{source}",
                                           output_path=str(work / f"{family}.nemo")))
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_imported_logits_equal_transformers(imported, tokens, family):
    source, ckpt = imported[family]
    diff = close(nemo_logits(ckpt, tokens), hf_logits(source, tokens))
    print(f"HF import {family}: max abs logit diff / scale = {diff:.2e}")
    assert diff <= TOL, diff
    assert (ckpt / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_export_loads_in_transformers_and_is_bit_identical(imported, work, tokens, family):
    from safetensors.torch import load_file

    from nemo_lite.llm.hf import export_ckpt

    source, ckpt = imported[family]
    out = export_ckpt(str(ckpt), target="hf", output_path=str(work / f"{family}.export"))
    assert close(hf_logits(out, tokens), hf_logits(source, tokens)) == 0.0
    original, exported = load_file(source / "model.safetensors"), load_file(
        out / "model.safetensors")
    if json.loads((source / "config.json").read_text()).get("tie_word_embeddings"):
        original.pop("lm_head.weight", None)  # transformers may write the tied copy too
    assert sorted(original) == sorted(exported)
    assert all(torch.equal(original[k], exported[k]) for k in original)
    assert (out / "tokenizer.json").is_file()


# (TP, PP, SP, EP) -> the families checked in that layout (one torchrun launch per layout)
LAYOUTS = {(2, 1, 0, 1): ["llama3", "qwen2", "qwen3", "gpt2", "mixtral"],
           (2, 1, 1, 1): ["llama3", "qwen2", "qwen3", "gpt2"],
           (1, 2, 0, 1): ["llama3", "qwen2", "qwen3", "gpt2", "mixtral"],
           (1, 1, 0, 2): ["mixtral"]}
PARALLEL_FAMILIES = sorted({f for families in LAYOUTS.values() for f in families})


@pytest.fixture(scope="module")
def parallel_logits(imported, work, tokens):
    """family -> layout -> logits, gathered on rank 0 of each launch."""
    torch.save(tokens, work / "tokens.pt")
    out: dict[str, dict] = {family: {} for family in PARALLEL_FAMILIES}
    for layout, families in LAYOUTS.items():
        tp, pp, sp, ep = layout
        files = {f: work / f"{f}_tp{tp}_pp{pp}_sp{sp}_ep{ep}.pt" for f in families}
        pairs = [str(x) for f in families for x in (imported[f][1], files[f])]
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
             str(tp * pp * max(ep // tp, 1)), "--standalone", str(SCRIPT), str(work / "tokens.pt"),
             ",".join(map(str, layout)), *pairs],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-4000:]
        for family, file in files.items():
            out[family][layout] = torch.load(file)
    return out


@pytest.mark.distributed
@pytest.mark.parametrize("family", PARALLEL_FAMILIES)
def test_logits_in_parallel_layouts(imported, parallel_logits, tokens, family):
    reference = hf_logits(imported[family][0], tokens)
    for (tp, pp, sp, ep), ours in parallel_logits[family].items():
        diff = close(ours, reference)
        print(f"HF import {family} TP{tp} PP{pp} SP{sp} EP{ep}: max abs logit diff / scale "
              f"{diff:.2e}")
        assert diff <= TOL, (tp, pp, sp, ep, diff)


BAD = {
    "no config.json": (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    "no weights": (lambda d: (d / "model.safetensors").unlink(), "no weights"),
    "truncated safetensors": (
        lambda d: (d / "model.safetensors").write_bytes(
            (d / "model.safetensors").read_bytes()[:1000]), "truncated or corrupt"),
    "missing tensor": (lambda d: _drop_tensor(d, "model.layers.1.mlp.up_proj.weight"),
                       "model.layers.1.mlp.up_proj.weight is missing"),
    "extra tensor": (lambda d: _add_tensor(d, "model.layers.9.mlp.up_proj.weight"),
                     "model.layers.9.mlp.up_proj.weight has no place in the model"),
    "wrong shape": (lambda d: _edit_config(d, intermediate_size=96), "does not fit"),
    "unsupported architecture": (lambda d: _edit_config(d, architectures=["BertModel"]),
                                 "architecture 'BertModel' is not supported"),
    "index names a missing shard": (lambda d: _index_to_missing(d), "which is missing"),
    "unsupported config value": (lambda d: _edit_config(d, hidden_act="gelu"),
                                 "config.json: hidden_act='gelu': only silu"),
    "config key missing": (lambda d: _drop_config_key(d, "num_hidden_layers"),
                           "config.json: no 'num_hidden_layers'"),
}


def _drop_tensor(directory: Path, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    tensors.pop(name)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def _add_tensor(directory: Path, name: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    tensors[name] = torch.zeros(4)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def _edit_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **changes}))


def _drop_config_key(directory: Path, key: str) -> None:
    config = json.loads((directory / "config.json").read_text())
    config.pop(key)
    (directory / "config.json").write_text(json.dumps(config))


def _index_to_missing(directory: Path) -> None:
    from safetensors.torch import load_file

    names = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").rename(directory / "part-1.safetensors")
    weight_map = dict.fromkeys(names, "part-1.safetensors")
    weight_map[next(iter(names))] = "part-2.safetensors"
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_and_nothing_written(work, tmp_path, case):
    import shutil

    from nemo_lite.llm.hf import HFCheckpointError, import_ckpt

    source = tmp_path / "model"
    shutil.copytree(tiny_model(work, "llama3"), source)
    breaks, words = BAD[case]
    breaks(source)
    with pytest.raises(HFCheckpointError) as error:
        import_ckpt(source=f"hf://{source}", output_path=str(tmp_path / "out"))
    assert words in str(error.value), str(error.value)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()


def test_existing_output_and_an_uncached_name_are_refused(work, tmp_path, monkeypatch):
    from nemo_lite.llm.hf import HFCheckpointError, import_ckpt

    (tmp_path / "out").mkdir()
    with pytest.raises(HFCheckpointError, match="exists: remove it"):
        import_ckpt(source=f"hf://{tiny_model(work, 'llama3')}", output_path=str(tmp_path / "out"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(HFCheckpointError, match=r"not in the local Hugging Face cache: looked for "
                       r".*models--meta-llama--Llama-3"):
        import_ckpt(source="hf://meta-llama/Llama-3", output_path=str(tmp_path / "x"))


def test_a_cached_name_resolves_to_its_snapshot(work, tmp_path, monkeypatch):
    import shutil

    from nemo_lite.llm.hf import resolve_source

    repo = tmp_path / "cache" / "models--org--tiny"
    snapshot = repo / "snapshots" / "abc123"
    shutil.copytree(tiny_model(work, "llama3"), snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert resolve_source("hf://org/tiny") == snapshot


def test_import_streams_each_parameter_from_the_files(work, tmp_path, monkeypatch):
    """Import never builds the model: it is on the meta device, and the checkpoint writer asks
    for every parameter (in tensor-parallel pieces), which is read and merged then, once, and
    dropped after its last piece is written (peak memory: the 1B-shaped figure in
    benchmarks/RESULTS.md)."""
    from torch.distributed.checkpoint import FileSystemReader

    from nemo_lite.io import load_context
    from nemo_lite.lightning import streaming_save
    from nemo_lite.llm.hf import import_ckpt
    from nemo_lite.llm.hf.convert import build_on_meta, single_rank

    made = []
    make = streaming_save.ProducedTensors._make

    def spy(self, key):
        made.append(key)
        return make(self, key)

    monkeypatch.setattr(streaming_save.ProducedTensors, "_make", spy)
    ckpt = import_ckpt(source=f"hf://{tiny_model(work, 'llama3')}",
                       output_path=str(tmp_path / "out"))
    with single_rank():
        params = list(build_on_meta(load_context(ckpt, subpath="model.config")).parameters())
    assert all(p.device.type == "meta" for p in params)
    assert len(made) == len(set(made)) == len(params), (len(made), len(params))
    # the TP-split weights are saved in pieces (8, or 4 where 8 does not divide), so a rank at
    # TP 2, 4 or 8 reads only its own bytes
    chunks = {key: len(meta.chunks) for key, meta in
              FileSystemReader(str(ckpt / "weights")).read_metadata().state_dict_metadata.items()
              if hasattr(meta, "chunks")}
    layers = 2
    assert chunks["decoder.layers.self_attention.linear_qkv.weight"] == 8 * layers
    assert chunks["decoder.layers.self_attention.linear_proj.weight"] == 8 * layers
    assert chunks["decoder.layers.mlp.linear_fc1.weight"] == 2 * 8 * layers  # gate, up halves
    assert chunks["decoder.layers.mlp.linear_fc2.weight"] == 8 * layers
    assert chunks["embedding.word_embeddings.weight"] == 4  # VOCAB rows: 300 = 4 x 75
    assert chunks["output_layer.weight"] == 4
