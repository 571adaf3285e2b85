"""Export -> edit -> run: `--to-yaml/--to-toml/--to-json`, then `--yaml FILE` (NeMo-Run's workflow).

In process: every recipe and entry point, in each format, rebuilds the exact config it was
exported from (TOML has no null: there, only None values that equal the default may go).
Through the real CLI: each recipe is exported shrunk for one CPU rank with `max_steps=3`, the
file is edited to `max_steps: 2`, and the run from the file must stop after step 2; bad files
end in one line naming the key path, exit 2, nothing written.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest

from tests.cli.test_cli import cli

RECIPES = ["tiny_gpt", "gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"]
FORMATS = ["yaml", "toml", "json"]


def strip_default_nones(config):
    """A copy of the Fiddle tree without arguments that are None and default to None."""
    import copy

    import fiddle as fdl

    config = copy.deepcopy(config)

    def visit(node):
        if not isinstance(node, fdl.Buildable):
            return
        params = inspect.signature(fdl.get_callable(node)).parameters
        for key, value in list(node.__arguments__.items()):
            if value is None and key in params and params[key].default is None:
                delattr(node, key)
            else:
                for item in value if isinstance(value, list) else [value]:
                    visit(item)

    visit(config)
    return config


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("entry", ["pretrain", "finetune", "validate"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_an_export_rebuilds_the_config_it_came_from(tmp_path, recipe, entry, fmt):
    from nemo_run.cli.config import ConfigSerializer

    from nemo_lite.cli.llm import ENTRYPOINTS, RECIPE_KINDS, LazyRecipe
    from nemo_lite.cli.task_file import build_task

    original = LazyRecipe(recipe, RECIPE_KINDS[entry], entry)()
    path = tmp_path / f"run.{fmt}"
    ConfigSerializer().dump(original, path)
    rebuilt = build_task(path, ENTRYPOINTS[entry])
    if fmt == "toml":
        original = strip_default_nones(original)
    assert rebuilt == original, (rebuilt, original)


SHRINK = [
    "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=1", "trainer.max_steps=3",
    "trainer.strategy.tensor_model_parallel_size=1", "trainer.strategy.pipeline_model_parallel_size=1",
    "trainer.strategy.virtual_pipeline_model_parallel_size=None",
    "trainer.strategy.context_parallel_size=1", "trainer.strategy.expert_model_parallel_size=1",
    "trainer.strategy.sequence_parallel=False",
    "model.config.num_layers=2", "model.config.hidden_size=64", "model.config.ffn_hidden_size=128",
    "model.config.num_attention_heads=4", "model.config.seq_length=64",
    "data.seq_length=64", "data.global_batch_size=2", "data.micro_batch_size=1",
    "optim.lr_scheduler.warmup_steps=1", "log.log_dir=runs",
]
EXTRA = {"tiny_gpt": ["trainer.strategy.tensor_model_parallel_size=1"],
         "gpt_126m": ["model.config.vocab_size=1024"],
         "llama3_8b": ["model.config.vocab_size=1024", "model.config.num_query_groups=2"],
         "llama3_70b": ["model.config.vocab_size=1024", "model.config.num_query_groups=2"],
         "mixtral_8x7b": ["model.config.vocab_size=1024", "model.config.num_query_groups=2",
                          "model.config.moe_ffn_hidden_size=128"]}
RUNS = [("tiny_gpt", "yaml"), ("tiny_gpt", "toml"), ("tiny_gpt", "json"),
        ("gpt_126m", "yaml"), ("llama3_8b", "toml"), ("llama3_70b", "json"),
        ("mixtral_8x7b", "yaml")]


def edit_max_steps(path, fmt: str, steps: int) -> None:
    old = {"yaml": "\n  max_steps: 3\n", "toml": "\nmax_steps = 3\n", "json": '"max_steps": 3'}[fmt]
    text = path.read_text()
    assert text.count(old) == 1, text  # exactly the trainer's max_steps (the schedule's is null)
    path.write_text(text.replace(old, old.replace("3", str(steps))))


def steps_printed(stdout: str) -> list[str]:
    return re.findall(r"step (\d+/\d+) \| loss", stdout)


@pytest.mark.distributed
@pytest.mark.parametrize("recipe,fmt", RUNS, ids=[f"{r}-{f}" for r, f in RUNS])
def test_export_edit_run_takes_the_edit(tmp_path, recipe, fmt):
    """tiny_gpt is exported by the CLI in each format; the GPU recipes (shrunk by overrides)
    by the serializer the CLI's --to-* calls, to spare a process start each."""
    file = tmp_path / f"run.{fmt}"
    if recipe == "tiny_gpt":
        proc = cli("llm", "pretrain", "--factory", recipe, *SHRINK, *EXTRA[recipe],
                   f"--to-{fmt}", str(file), "-y", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not (tmp_path / "runs").exists()  # an export runs nothing
    else:
        from nemo_run.cli.cli_parser import parse_cli_args
        from nemo_run.cli.config import ConfigSerializer

        from recipes import get_recipe

        task = parse_cli_args(get_recipe(recipe)(), [*SHRINK, *EXTRA[recipe]])
        ConfigSerializer().dump(task, file)
    edit_max_steps(file, fmt, 2)
    proc = cli("llm", "pretrain", "--yaml", str(file), "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert steps_printed(proc.stdout) == ["1/2", "2/2"], proc.stdout[-3000:]


@pytest.mark.distributed
def test_finetune_and_validate_from_files_with_overrides_on_top(tmp_path):
    """tiny_gpt: pretrain from a JSON file, finetune from its checkpoint via a YAML file given
    with --factory (file over recipe) and an override on top, validate from a TOML file."""
    pre = tmp_path / "pre.json"
    assert cli("llm", "pretrain", "--factory", "tiny_gpt", "trainer.max_steps=3",
               "trainer.devices=1", "trainer.strategy.tensor_model_parallel_size=1",
               "log.log_dir=runs", "log.name=pre", "--to-json", str(pre), "-y",
               cwd=tmp_path).returncode == 0
    data = json.loads(pre.read_text())
    data["trainer"]["max_steps"] = 2
    pre.write_text(json.dumps(data))
    proc = cli("llm", "pretrain", "--yaml", str(pre), "-y", cwd=tmp_path)
    assert proc.returncode == 0 and steps_printed(proc.stdout) == ["1/2", "2/2"], proc.stderr[-3000:]
    checkpoint = next((tmp_path / "runs" / "pre" / "checkpoints").glob("step=2-*"))

    fine = tmp_path / "fine.yaml"
    assert cli("llm", "finetune", "--factory", "tiny_gpt", "trainer.max_steps=3",
               "trainer.devices=1", "trainer.strategy.tensor_model_parallel_size=1",
               "log.log_dir=runs", "log.name=fine", "--to-yaml", str(fine), "-y",
               cwd=tmp_path).returncode == 0
    edit_max_steps(fine, "yaml", 2)
    proc = cli("llm", "finetune", "--factory", "tiny_gpt", "--yaml", str(fine),
               f"resume.restore_config.path={checkpoint}", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert steps_printed(proc.stdout) == ["1/2", "2/2"], proc.stdout[-3000:]

    val = tmp_path / "val.toml"
    assert cli("llm", "validate", "--factory", "tiny_gpt", "trainer.devices=1",
               "trainer.strategy.tensor_model_parallel_size=1", "trainer.limit_val_batches=3",
               "log.log_dir=runs", "log.name=val", "--to-toml", str(val), "-y",
               cwd=tmp_path).returncode == 0
    val.write_text(val.read_text().replace("limit_val_batches = 3", "limit_val_batches = 1"))
    proc = cli("llm", "validate", "--yaml", str(val), f"resume.resume_from_path={checkpoint}",
               "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"val_loss\s+\d", proc.stdout + proc.stderr), proc.stdout[-2000:]


BAD_FILES = {  # (edit of the exported YAML, words the one-line error must contain)
    "unknown target": (("_target_: nemo_lite.llm.gpt.config.GPTConfig",
                        "_target_: nemo_lite.llm.gpt.config.GPTConfgi"),
                       ["model.config._target_", "GPTConfgi", "does not exist"]),
    "unknown key": (("    hidden_size: 64", "    hiden_size: 64"),
                    ["model.config.hiden_size", "Did you mean hidden_size"]),
    "wrong type": (("  max_steps: 3", "  max_steps: many"), ["trainer.max_steps", "many"]),
    "missing target": (("  _target_: nemo_lite.llm.data.mock.MockDataModule\n", ""),
                       ["'data'", "without _target_"]),
    "other entry point": (("_target_: nemo_lite.llm.api.pretrain",
                           "_target_: nemo_lite.llm.api.finetune"),
                          ["nemo_lite.llm.api.finetune", "this command runs"]),
}


@pytest.fixture(scope="module")
def good_yaml(tmp_path_factory):
    work = tmp_path_factory.mktemp("good")
    proc = cli("llm", "pretrain", "--factory", "tiny_gpt", "trainer.max_steps=3",
               "--to-yaml", str(work / "good.yaml"), "-y", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (work / "good.yaml").read_text()


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_naming_the_key(tmp_path, good_yaml, case):
    from nemo_lite.cli.llm import ENTRYPOINTS
    from nemo_lite.cli.task_file import TaskFileError, build_task

    (old, new), words = BAD_FILES[case]
    assert old in good_yaml
    bad = tmp_path / "bad.yaml"
    bad.write_text(good_yaml.replace(old, new, 1))
    if case != "wrong type":  # checked before NeMo-Run parses anything
        with pytest.raises(TaskFileError) as error:
            build_task(bad, ENTRYPOINTS["pretrain"])
        assert all(w in str(error.value) for w in words), str(error.value)
    proc = cli("llm", "pretrain", "--yaml", str(bad), "log.log_dir=runs", "-y", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: ") and str(bad) in lines[0], lines
    assert all(w in lines[0] for w in words), lines
    assert not (tmp_path / "runs").exists()


def test_a_required_argument_left_unset_names_its_key(tmp_path):
    """The finetune recipe's restore path comes from the command line; without it, one line."""
    file = tmp_path / "fine.yaml"
    assert cli("llm", "finetune", "--factory", "tiny_gpt", "--to-yaml", str(file), "-y",
               cwd=tmp_path).returncode == 0
    proc = cli("llm", "finetune", "--yaml", str(file), "-y", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "'resume.restore_config.path' is required by RestoreConfig" in proc.stderr
