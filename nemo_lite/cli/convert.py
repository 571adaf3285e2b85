"""`nemo llm import` / `nemo llm export`: the checks before a conversion runs, and its plan.

`check_conversion(task)` looks at the resolved task (a Partial of `llm.import_ckpt` or
`llm.export_ckpt`) without converting anything: the source is readable, its architecture is
supported, the output does not exist; it returns the lines `--dryrun` prints (family, config,
parameter count, tensors and bytes). Any problem is one line and exit 2, as for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def check_conversion(task: Any) -> list[str]:
    import fiddle as fdl

    fn = fdl.get_callable(task)
    arguments = dict(task.__arguments__)
    if fn.__name__ == "import_ckpt":
        return _check_import(arguments)
    if fn.__name__ == "export_ckpt":
        return _check_export(arguments)
    return []


def _check_import(arguments: dict[str, Any]) -> list[str]:
    import fiddle as fdl

    from nemo_lite.llm import count_parameters
    from nemo_lite.llm.hf.convert import _torch_dtype, default_output
    from nemo_lite.llm.hf.families import family_for
    from nemo_lite.llm.hf.source import (
        HFCheckpointError,
        TensorReader,
        read_config,
        resolve_source,
    )

    source = arguments.get("source") or ""
    if not source:
        raise HFCheckpointError("import needs source=hf:///absolute/dir or source=hf://org/name.")
    directory = resolve_source(source)
    hf = read_config(directory)
    architecture = (hf.get("architectures") or ["?"])[0]
    family = family_for(architecture)
    model = arguments.get("model")
    config = family.config_from_hf(hf, _torch_dtype(hf.get("torch_dtype") or hf.get("dtype")))
    if isinstance(model, fdl.Buildable):
        given = fdl.build(model.config)
        for field in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads",
                      "num_query_groups", "kv_channels", "vocab_size"):
            if getattr(given, field) != getattr(config, field):
                raise HFCheckpointError(
                    f"model={type(given).__name__}: {field}={getattr(given, field)} but "
                    f"{directory}/config.json has {getattr(config, field)}: give the matching "
                    "model, or leave model out to take the config from config.json.")
        config = given
    output = Path(arguments.get("output_path") or default_output(source, directory))
    if output.exists() and not arguments.get("overwrite"):
        raise HFCheckpointError(f"{output} exists: remove it, choose another output_path, or "
                                "pass overwrite=True.")
    reader = TensorReader(directory)
    shapes = [f"{config.num_layers} layers", f"hidden {config.hidden_size}",
              f"ffn {config.ffn_hidden_size}", f"{config.num_attention_heads} heads / "
              f"{config.num_query_groups or config.num_attention_heads} KV groups",
              f"vocab {config.vocab_size}"]
    return [f"source: {directory} ({architecture}, {family.__name__.rsplit('.', 1)[-1]} family)",
            f"config: {type(config).__name__}: {', '.join(shapes)}",
            f"parameters: {count_parameters(config):,}",
            f"tensors: {len(reader.names())} in {len(set(reader.files.values()))} file(s)",
            f"output: {output}"]


def _check_export(arguments: dict[str, Any]) -> list[str]:
    from nemo_lite.lightning.checkpoint_dir import resolve_checkpoint_path
    from nemo_lite.lightning.checkpoint_io import checkpoint_problem
    from nemo_lite.llm.hf.source import HFCheckpointError

    path, output = arguments.get("path"), arguments.get("output_path")
    if not path or not output:
        raise HFCheckpointError("export needs path=CHECKPOINT and output_path=DIR.")
    if arguments.get("target", "hf") != "hf":
        raise HFCheckpointError(f"target={arguments['target']!r}: only 'hf' is supported.")
    problem, manifest = checkpoint_problem(resolve_checkpoint_path(path))
    if problem:
        raise HFCheckpointError(problem)
    if Path(output).exists() and not arguments.get("overwrite"):
        raise HFCheckpointError(f"{output} exists: remove it, choose another output_path, or "
                                "pass overwrite=True.")
    return [f"checkpoint: {path} (step {manifest.get('step')}, "
            f"{manifest.get('architecture') or 'trained here'})", f"output: {output}"]
