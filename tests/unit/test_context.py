"""A run's context (trainer, model, data) saved as Fiddle JSON beside the weights, and loaded
back: round trip, readable YAML, the allow-list that keeps a crafted context from running
code, fields a newer library dropped, and clear errors for missing or corrupt files."""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import sys
from pathlib import Path

import fiddle as fdl
import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import yaml
from fiddle._src.experimental import serialization
from megatron.core.distributed import DistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig
from megatron.core.transformer.enums import AttnBackend

from nemo_lite import lightning as nl
from nemo_lite import llm
from nemo_lite.io import ContextError, ContextWarning, load_context, save_context, to_config

HERE = __name__  # this module, importable by name: a "user module" for allow= tests


class UserCallback(pl.Callback):
    """A user's callback: records no constructor arguments, so it cannot be saved."""


def make_marker(path: str) -> str:
    """Stands in for a user's function; building it leaves a file behind."""
    Path(path).write_text("built")
    return path


def _components():
    tokenizer = llm.ByteTokenizer()
    trainer = nl.Trainer(
        strategy=nl.MegatronStrategy(
            tensor_model_parallel_size=2,
            pipeline_dtype=torch.bfloat16,
            ddp=DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=True),
            timeout=datetime.timedelta(minutes=10),
        ),
        plugins=nl.MegatronMixedPrecision("bf16-mixed", params_dtype=torch.bfloat16),
        accelerator="cpu",
        devices=2,
        max_steps=5,
        callbacks=[UserCallback()],
    )
    config = llm.LlamaConfig(
        num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
        ffn_hidden_size=128, seq_length=32, vocab_size=258,
        activation_func=F.gelu, attention_backend=AttnBackend.local,
    )
    optim = nl.MegatronOptimizerModule(
        OptimizerConfig(lr=1e-3, optimizer="adam", use_distributed_optimizer=False,
                        weight_decay=0.05),
        lr_scheduler=nl.CosineAnnealingScheduler(warmup_steps=2),
    )
    model = llm.GPTModel(config, optim=optim, tokenizer=tokenizer)
    data = llm.MockDataModule(seq_length=32, global_batch_size=8, micro_batch_size=2,
                              tokenizer=tokenizer)
    return trainer, model, data


@pytest.fixture(scope="module")
def run():
    return _components()


@pytest.fixture(scope="module")
def ckpt(run, tmp_path_factory):
    trainer, model, data = run
    path = tmp_path_factory.mktemp("ckpt")
    save_context(path, trainer=trainer, model=model, data=data)
    return path


def _pyrefs(node):
    if isinstance(node, dict):
        if node.get("type") == "pyref":
            yield node
        for value in node.values():
            yield from _pyrefs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _pyrefs(value)


def _crafted_context(tmp_path: Path, module: str, name: str, /, **arguments) -> Path:
    """A context whose model is `module.name(**arguments)`, as an attacker would write it."""
    text = serialization.dump_json({"model": fdl.Config(make_marker, path="unused")})
    data = json.loads(text)
    for ref in _pyrefs(data):
        if ref["module"] == HERE and ref["name"] == "make_marker":
            ref["module"], ref["name"] = module, name
    text = json.dumps(data).replace('"path"', json.dumps(next(iter(arguments))))
    text = text.replace('"unused"', json.dumps(next(iter(arguments.values()))))
    ckpt = tmp_path / "crafted"
    (ckpt / "context").mkdir(parents=True)
    (ckpt / "context" / "io.json").write_text(text)
    return ckpt


# Round trip


def test_context_holds_fiddle_json_and_yaml_only(ckpt):
    names = sorted(p.name for p in (ckpt / "context").iterdir())
    assert names == ["config.yaml", "io.json"]
    data = json.loads((ckpt / "context" / "io.json").read_text())
    assert {"root", "objects", "version"} <= set(data)


def test_configs_load_equal_to_the_originals(run, ckpt):
    trainer, model, data = run
    loaded = load_context(ckpt, build=False)
    assert set(loaded) == {"trainer", "model", "data"}
    assert loaded["trainer"] == to_config(trainer)
    assert loaded["model"] == to_config(model)
    assert loaded["data"] == to_config(data)
    assert load_context(ckpt / "context", subpath="model", build=False) == to_config(model)


def test_objects_rebuild_with_the_same_settings(run, ckpt):
    trainer, model, data = run
    built = load_context(ckpt)
    t, m, d = built["trainer"], built["model"], built["data"]
    assert isinstance(t, nl.Trainer) and isinstance(m, llm.GPTModel)
    assert t.strategy.layout.tensor_model_parallel_size == 2
    assert t.strategy.pipeline_dtype is torch.bfloat16
    assert t.strategy.ddp_config.overlap_grad_reduce is True
    assert t.max_steps == 5
    assert t.precision_plugin.precision == "bf16-mixed"
    assert t.precision_plugin.params_dtype is torch.bfloat16
    assert m.config.hidden_size == 64 and m.config.num_query_groups == 2
    assert m.config.activation_func is F.gelu
    assert m.config.attention_backend is AttnBackend.local
    assert m.optim.config.lr == 1e-3 and m.optim.config.weight_decay == 0.05
    assert m.optim.lr_scheduler.warmup_steps == 2
    assert (d.seq_length, d.global_batch_size, d.micro_batch_size) == (32, 8, 2)
    assert m.tokenizer is d.tokenizer  # shared in the run, shared when rebuilt
    # what they were built from is the same as the originals' record
    for original, rebuilt in ((trainer, t), (model, m), (data, d)):
        assert to_config(rebuilt) == to_config(original)


def test_subpath_selects_one_part(run, ckpt):
    model = load_context(ckpt, subpath="model")
    assert isinstance(model, llm.GPTModel) and model.config.num_layers == 2
    config = load_context(ckpt, subpath="model.config")
    assert isinstance(config, llm.LlamaConfig) and config.ffn_hidden_size == 128
    assert load_context(ckpt, subpath="data.global_batch_size") == 8
    assert load_context(ckpt, subpath="trainer.strategy.pipeline_dtype") is torch.bfloat16
    with pytest.raises(ContextError, match=r"no `model.nope`.*available: config, optim"):
        load_context(ckpt, subpath="model.nope")


def test_unsaveable_parts_are_dropped_with_a_warning_naming_them(run, caplog, tmp_path):
    trainer, model, data = run
    # Lightning appended its own callbacks to the user's list: the record kept the user's one
    assert len(trainer.__io__.arguments["callbacks"]) == 1
    with caplog.at_level(logging.WARNING, logger="nemo_lite.io"):
        save_context(tmp_path, trainer=trainer, model=model, data=data)
    assert "trainer.callbacks[0]" in caplog.text and "UserCallback" in caplog.text
    assert load_context(tmp_path, subpath="trainer.callbacks", build=False) == []


def test_yaml_is_readable_and_names_the_targets(ckpt):
    doc = yaml.safe_load((ckpt / "context" / "config.yaml").read_text())
    assert doc["trainer"]["_target_"] == "nemo_lite.lightning.trainer.Trainer"
    assert doc["trainer"]["strategy"]["tensor_model_parallel_size"] == 2
    assert doc["model"]["_target_"] == "nemo_lite.llm.gpt.model.GPTModel"
    assert doc["model"]["config"]["_target_"] == "nemo_lite.llm.gpt.config.LlamaConfig"
    assert doc["model"]["config"]["activation_func"] == {
        "_target_": "torch.nn.functional.gelu", "_call_": False}
    assert doc["trainer"]["plugins"]["params_dtype"]["_target_"] == "torch.bfloat16"
    assert doc["data"]["global_batch_size"] == 8


# The allow-list


@pytest.mark.parametrize(
    "module, name, arguments",
    [
        ("os", "system", {"command": "touch {marker}"}),
        ("subprocess", "run", {"args": ["touch", "{marker}"]}),
        ("builtins", "eval", {"source": "open({marker!r}, 'w')"}),
        ("builtins", "__import__", {"name": "os"}),
    ],
)
def test_references_outside_the_allow_list_are_refused_before_anything_runs(
    tmp_path, module, name, arguments
):
    marker = tmp_path / "pwned"
    key, value = next(iter(arguments.items()))
    value = json.loads(json.dumps(value).replace("{marker}", str(marker)).replace(
        "{marker!r}", repr(str(marker))))
    ckpt = _crafted_context(tmp_path, module, name, **{key: value})
    for build in (True, False):
        with pytest.raises(ContextError) as err:
            load_context(ckpt, build=build)
        message = str(err.value)
        assert f"`{module}.{name}`" in message
        assert "Nothing was imported or built" in message
        assert "allow=" in message and "NEMO_LITE_CONTEXT_ALLOW" in message
    assert not marker.exists()


def test_aliases_through_an_allowed_module_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = _crafted_context(tmp_path, "torch", "os.system", command=f"touch {marker}")
    with pytest.raises(ContextError, match=r"`torch\.os\.system`: it is outside the allow-list"):
        load_context(ckpt)  # not a name on the list
    # a caller who allows the whole `torch` prefix still gets aliases judged by their home
    alias = r"`torch\.os\.system`: it resolves to posix\.system, which is outside the allow-list"
    with pytest.raises(ContextError, match=alias):
        load_context(ckpt, allow=["torch"])
    ckpt2 = _crafted_context(tmp_path / "b", "nemo_lite", "__builtins__", command="x")
    with pytest.raises(ContextError, match="private attribute"):
        load_context(ckpt2, allow=["nemo_lite"])
    assert not marker.exists()


def test_code_loaders_inside_an_allowed_prefix_are_refused_by_default(tmp_path):
    ckpt = _crafted_context(tmp_path, "torch.serialization", "load", f="/nonexistent.pt")
    with pytest.raises(ContextError, match=r"`torch\.serialization\.load`: it is outside"):
        load_context(ckpt)
    with pytest.raises(ContextError, match=r"`torch\.serialization\.load`: refused by default"):
        load_context(ckpt, allow=["torch"])


def test_a_user_module_loads_once_allowed(tmp_path, monkeypatch):
    marker = tmp_path / "built"
    save_context(tmp_path, hook=fdl.Config(make_marker, path=str(marker)))
    with pytest.raises(ContextError, match=rf"`{HERE}\.make_marker`: it is outside"):
        load_context(tmp_path)
    assert not marker.exists()
    assert load_context(tmp_path, allow=[HERE])["hook"] == str(marker)
    assert marker.read_text() == "built"
    marker.unlink()
    assert load_context(tmp_path, subpath="hook", allow=[f"{HERE}.make_marker"]) == str(marker)
    monkeypatch.setenv("NEMO_LITE_CONTEXT_ALLOW", f"some.other, {HERE}")
    assert load_context(tmp_path, subpath="hook") == str(marker)


# Version drift and broken files


def test_a_field_the_installed_code_dropped_is_skipped_with_a_warning(run, tmp_path):
    trainer, model, data = run
    save_context(tmp_path, model=model)
    io_json = tmp_path / "context" / "io.json"
    doc = json.loads(io_json.read_text())
    objects = doc["objects"]

    def deref(node):
        return objects[node["key"]] if node.get("type") == "ref" else node

    for node in objects.values():
        if node.get("type", {}).get("name") != "Config":
            continue
        metadata = deref(node["metadata"])
        fields = dict(metadata["items"])
        if fields["Attr(name='fn_or_cls')"]["name"] == "LlamaConfig":
            node["items"].append(["Attr(name='removed_in_new_mcore')", 7])
            names = deref(fields["Attr(name='argument_names')"])
            names["items"].append([f"Index(index={len(names['items'])})", "removed_in_new_mcore"])
            break
    else:
        pytest.fail("no LlamaConfig node in the saved context")
    io_json.write_text(json.dumps(doc))

    with pytest.warns(ContextWarning, match=r"model\.config\.removed_in_new_mcore.*LlamaConfig"):
        rebuilt = load_context(tmp_path, subpath="model")
    assert rebuilt.config.hidden_size == 64 and not hasattr(rebuilt.config, "removed_in_new_mcore")


def test_missing_context_is_a_clear_error(tmp_path):
    with pytest.raises(ContextError, match=r"does not exist"):
        load_context(tmp_path / "nowhere")
    with pytest.raises(ContextError, match=r"no saved context in .*context/io\.json"):
        load_context(tmp_path)


def test_corrupt_json_is_a_clear_error(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "io.json").write_text('{"root": {"type": "ref", "key": "dict_1"}, "obj')
    with pytest.raises(ContextError, match=r"io\.json is not valid JSON \(line 1"):
        load_context(tmp_path)
    (context / "io.json").write_text("[1, 2]")
    with pytest.raises(ContextError, match=r"not a Fiddle config serialization"):
        load_context(tmp_path)
    (context / "io.json").write_text('{"root": {"type": "ref", "key": "gone"}, "objects": {}}')
    with pytest.raises(ContextError, match=r"not a valid Fiddle config serialization"):
        load_context(tmp_path)


def test_importing_nemo_lite_io_stays_light():
    code = (
        "import sys, nemo_lite.io\n"
        "heavy = ('torch', 'lightning', 'megatron.core', 'fiddle', 'nemo_run', 'yaml')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_paths_partials_and_numpy_scalars_convert(tmp_path):
    import functools

    import numpy as np

    value = {"path": Path("/data/run"), "fn": functools.partial(make_marker, path="x"),
             "scale": np.float32(1.5), "steps": (1, 2)}
    config = to_config(value)
    assert config["path"] == fdl.Config(type(Path("/data/run")), "/data/run")
    assert config["fn"] == fdl.Partial(make_marker, path="x")
    assert config["scale"] == 1.5 and type(config["scale"]) is float
    save_context(tmp_path, extra=value)
    built = load_context(tmp_path, subpath="extra", allow=[HERE])
    assert built["path"] == Path("/data/run") and built["steps"] == (1, 2)
    assert built["fn"].func is make_marker and built["fn"].keywords == {"path": "x"}


def test_an_unrepresentable_root_is_an_error():
    with pytest.raises(ContextError, match=r"cannot save UserCallback in a config"):
        to_config(UserCallback())


def test_a_cycle_is_dropped_not_recursed(caplog):
    loop: list = [1]
    loop.append(loop)
    with caplog.at_level(logging.WARNING, logger="nemo_lite.io"):
        assert to_config(loop, name="loop") == [1]
    assert "loop[1]" in caplog.text and "cycle" in caplog.text
