"""The saved-context allow-list: exact names, derived from what nemo_lite saves, nothing else.

- Every kind of context nemo_lite writes (every recipe, data module, tokenizer, precision,
  callback, LoRA: tests/_support/contexts.py) names only allowed callables, and loads back and
  rebuilds its run.
- Every nemo_lite component that records itself, and every recipe factory, is on the list;
  every name on the list resolves.
- Contexts crafted to name code-running callables under each module prefix the old
  prefix rule allowed (torch, lightning, megatron.core, fiddle, nemo_run, nemo_lite,
  collections) are refused before anything is imported, and no marker file appears; the same
  context, explicitly allowed, does run (the crafted files are real attacks).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import warnings

import fiddle as fdl
import pytest

from nemo_lite.io import ContextError, load_context
from nemo_lite.io.allowed import ALLOWED
from tests._support.contexts import every_saved_context, references
from tests.unit.test_context import _crafted_context


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    return every_saved_context(tmp_path_factory.mktemp("contexts"))


def test_every_saved_context_names_only_allowed_callables(contexts):
    outside = {case: sorted(references(path) - ALLOWED) for case, path in contexts.items()}
    assert not any(outside.values()), {c: n for c, n in outside.items() if n}
    # the cases cover what the issue lists
    written = set().union(*(references(p) for p in contexts.values()))
    for name in ("nemo_lite.llm.peft.lora.LoRA", "nemo_lite.llm.data.finetuning.FineTuningDataModule",
                 "nemo_lite.llm.data.pretraining.PreTrainingDataModule",
                 "nemo_lite.llm.tokenizer.SentencePieceTokenizer",
                 "nemo_lite.lightning.comm_overlap.MegatronCommOverlapCallback",
                 "nemo_lite.llm.gpt.mixtral.MixtralConfig8x7B", "torch.bfloat16",
                 "datetime.timedelta",
                 "megatron.core.distributed.distributed_data_parallel_config."
                 "DistributedDataParallelConfig"):
        assert name in written, name


def test_every_saved_context_loads_and_rebuilds_its_run(contexts):
    for case, path in contexts.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = load_context(path.parent.parent)
        assert {"trainer", "model", "data"} <= set(built), case
        assert type(built["trainer"]).__name__ == "Trainer", case
        assert built["model"].config.num_layers > 0, case


def _nemo_lite_modules():
    import nemo_lite

    for info in pkgutil.walk_packages(nemo_lite.__path__, "nemo_lite."):
        if ".cli" in info.name:
            continue
        yield importlib.import_module(info.name)


def test_every_recording_component_and_recipe_factory_is_on_the_list():
    from nemo_lite.io.capture import IOMixin
    from recipes import get_recipe, list_recipes

    recording = set()
    for module in _nemo_lite_modules():
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and obj is not IOMixin:
                captured = dataclasses.is_dataclass(obj) and "capture_dataclass" in inspect.getsource(
                    obj.__post_init__) if hasattr(obj, "__post_init__") else False
                if issubclass(obj, IOMixin) or captured:
                    recording.add(f"{obj.__module__}.{obj.__qualname__}")
    assert len(recording) > 20, recording
    assert recording <= ALLOWED, sorted(recording - ALLOWED)
    for name in list_recipes():
        for kind in ("pretrain", "finetune"):
            factory = get_recipe(name, kind)
            assert f"{factory.__module__}.{factory.__qualname__}" in ALLOWED, (name, kind)


def test_every_name_on_the_list_resolves():
    from nemo_lite.io.allow import resolve_name

    missing = [name for name in sorted(ALLOWED) if resolve_name(name) is None]
    assert not missing, missing


# name -> (arguments, what it would do if it were loaded)
ATTACKS = {
    "torch.utils.collect_env.run": ({"command": "touch {marker}"}, "runs a shell command"),
    "torch.utils.cpp_extension.load_inline": ({"name": "x"}, "compiles and loads code"),
    "torch.hub.load": ({"repo_or_dir": "{marker}"}, "imports hubconf.py from a directory"),
    "torch.load": ({"f": "{marker}"}, "unpickles a file"),
    "torch.jit.load": ({"f": "{marker}"}, "loads TorchScript"),
    "torch.package.PackageImporter": ({"file_or_buffer": "{marker}"}, "unpickles a package"),
    "torch.multiprocessing.spawn": ({"fn": "x"}, "starts processes"),
    "torch.distributed.run.main": ({"args": ["{marker}"]}, "launches a script"),
    "lightning.pytorch.cli.LightningCLI": ({"args": ["{marker}"]}, "parses and runs"),
    "lightning.fabric.utilities.cloud_io._load": ({"path_or_url": "{marker}"}, "torch.load"),
    "megatron.core.dist_checkpointing.load": ({"sharded_state_dict": {}}, "reads files"),
    "fiddle._src.experimental.serialization.load_json": ({"serialized": "{}"},
                                                          "imports names from a string"),
    "nemo_run.run.run": ({"fn_or_script": "x"}, "launches a job"),
    "nemo_lite.llm.data.corpus.build_stdlib_corpus": ({"output": "{marker}"}, "writes files"),
    "collections.namedtuple": ({"typename": "X"}, "execs generated code"),
    "builtins.exec": ({"source": "open('{marker}', 'w')"}, "runs code from a string"),
}


@pytest.mark.parametrize("full", sorted(ATTACKS))
def test_code_running_callables_under_the_old_prefixes_are_refused(tmp_path, full):
    marker = tmp_path / "pwned"
    arguments, _ = ATTACKS[full]
    key, value = next(iter(arguments.items()))
    value = [v.replace("{marker}", str(marker)) for v in value] if isinstance(value, list) \
        else value.replace("{marker}", str(marker)) if isinstance(value, str) else value
    module, name = full.rsplit(".", 1)
    ckpt = _crafted_context(tmp_path, module, name, **{key: value})
    for build in (True, False):
        with pytest.raises(ContextError) as error:
            load_context(ckpt, build=build)
        assert f"`{full}`: it is outside the allow-list" in str(error.value)
        assert "Nothing was imported or built" in str(error.value)
    assert not marker.exists()


def test_the_reported_attack_runs_when_explicitly_allowed(tmp_path):
    """The crafted context of the report is real: allowed by exact name, it runs `touch`."""
    marker = tmp_path / "pwned"
    ckpt = _crafted_context(tmp_path, "torch.utils.collect_env", "run",
                            command=f"touch {marker}")
    with pytest.raises(ContextError):
        load_context(ckpt)
    assert not marker.exists()
    load_context(ckpt, allow=["torch.utils.collect_env.run"])
    assert marker.exists()


def test_a_recorded_partial_of_an_allowed_function_loads(tmp_path):
    import functools

    import torch

    from nemo_lite import llm
    from nemo_lite.io import save_context

    config = llm.GPTConfig(init_method=functools.partial(torch.nn.init.normal_, std=0.01))
    save_context(tmp_path, model=llm.GPTModel(config))
    loaded = load_context(tmp_path, subpath="model.config.init_method", build=False)
    assert isinstance(loaded, fdl.Partial) and fdl.get_callable(loaded) is torch.nn.init.normal_
