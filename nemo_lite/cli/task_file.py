"""`--yaml FILE`: a config exported with `--to-yaml` / `--to-toml` / `--to-json`, run back.

NeMo-Run writes the resolved task as a tree of `_target_` nodes whose root is the entry point
itself (`_target_: nemo_lite.llm.api.pretrain`, `_partial_: true`), but its `--yaml` reader
treats every top-level key as an override of the entry point's arguments, so its own exports
fail to load (`unknown override key '_partial_'`). This module reads the file the way it was
written: the root must name the command's entry point, and every node is checked against
the callable it names before NeMo-Run parses it, so a bad file ends in one line that names the
key path in the file:

- a `_target_` that does not exist (module or name), or a section without `_target_`;
- a key the target does not take (with the closest names);
- a required argument that neither the file nor the overrides set (`missing_arguments`, checked
  by the CLI after the overrides).

Values are converted by NeMo-Run's parser against each parameter's annotation; a value of the
wrong type is reported by the CLI with its key path. TOML has no null: keys whose value is None
are left out of a `--to-toml` export and take their defaults when it is read back.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMATS = (".yaml", ".yml", ".json", ".toml")
_MARKERS = ("_target_", "_partial_", "_factory_")


class TaskFileError(ValueError):
    """A config file that cannot become the task; the message names the file and the key path."""


def read_task_file(path: str | Path) -> dict[str, Any]:
    """The file as a plain dict (YAML, JSON or TOML by its extension)."""
    from nemo_run.cli.config import ConfigSerializer

    file = Path(path)
    if file.suffix.lower() not in FORMATS:
        raise TaskFileError(f"{file}: not a config file NeMo-Run reads (use one of "
                            f"{', '.join(FORMATS)}).")
    if not file.is_file():
        raise TaskFileError(f"{file}: no such file.")
    try:
        data = ConfigSerializer().load_dict(file)
    except Exception as error:  # noqa: BLE001 - any parse error is the file's
        raise TaskFileError(f"{file}: cannot be read: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise TaskFileError(f"{file}: expected a mapping of keys at the top level.")
    return data


def resolve_target(path: str) -> Any:
    """The object a `_target_` string names (`package.module.Name`, or `Config[...]` forms)."""
    text = path.strip()
    for wrapper in ("Config[", "Partial["):
        if text.startswith(wrapper) and text.endswith("]"):
            text = text[len(wrapper):-1]
    module_name, _, name = text.rpartition(".")
    if not module_name:
        raise LookupError(f"'{path}' is not a dotted path (package.module.Name)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        parent, _, attr = module_name.rpartition(".")
        if parent:  # a nested class, e.g. pkg.module.Outer.Inner
            try:
                return getattr(resolve_target(f"{parent}.{attr}"), name)
            except (LookupError, AttributeError):
                pass
        raise LookupError(f"'{path}' does not exist (no module '{module_name}': {error})") from None
    if not hasattr(module, name):
        raise LookupError(f"'{path}' does not exist (module '{module_name}' has no '{name}')")
    return getattr(module, name)


def build_task(path: str | Path, entrypoint: Callable, base: Any = None) -> Any:
    """The file's task as a `run.Partial` of `entrypoint`, every node checked and built with the
    file's own typed values; merged over `base` (the `--factory` recipe's Partial) when given.

    Raises TaskFileError for a file made for another entry point, an unknown `_target_`, an
    unknown key or a missing required argument, naming the key path in the file.
    """
    import nemo_run as run

    file = Path(path)
    data = read_task_file(file)
    root = data.get("_target_")
    expected = f"{entrypoint.__module__}.{entrypoint.__name__}"
    if root is not None:
        try:
            target = resolve_target(str(root))
        except LookupError as error:
            raise TaskFileError(f"{file}: _target_: {error}.") from None
        if getattr(target, "__wrapped__", target) is not getattr(
                entrypoint, "__wrapped__", entrypoint):
            raise TaskFileError(
                f"{file}: _target_ is {root}, but this command runs {expected}. Run the file "
                f"with the command it was exported from, or set _target_: {expected}.")
    body = {k: v for k, v in data.items() if k not in ("_target_", "_partial_", "run")}
    if "_factory_" in body:
        raise TaskFileError(f"{file}: _factory_ at the top: give the recipe as --factory NAME "
                            "on the command line instead.")
    task = base if base is not None else run.Partial(entrypoint)
    _fill(file, "", task, body)
    return task


def missing_arguments(task: Any) -> list[tuple[str, str]]:
    """(key path, callable name) of every required argument left unset in the task: in the
    root and in every Config (a nested Partial may leave arguments to its caller)."""
    import fiddle as fdl

    out: list[tuple[str, str]] = []

    def visit(config: Any, where: str, root: bool) -> None:
        if not isinstance(config, fdl.Buildable):
            return
        if root or not isinstance(config, fdl.Partial):
            params, _ = _parameters(fdl.get_callable(config))
            name = getattr(fdl.get_callable(config), "__qualname__", "?")
            out.extend((f"{where}.{n}" if where else n, name) for n, p in params.items()
                       if p.default is inspect.Parameter.empty and p.kind != p.POSITIONAL_ONLY
                       and n not in config.__arguments__)
        for key, value in config.__arguments__.items():
            items = value if isinstance(value, (list, tuple)) else [value]
            for i, item in enumerate(items):
                suffix = f"[{i}]" if isinstance(value, (list, tuple)) else ""
                visit(item, f"{where}.{key}{suffix}" if where else f"{key}{suffix}", False)

    visit(task, "", True)
    return out


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool]:
    """(named parameters, takes **kwargs) of a class or function."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, True
    params = {n: p for n, p in signature.parameters.items()
              if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_ended = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    return params, open_ended


def _fill(file: Path, where: str, config: Any, node: dict[str, Any]) -> None:
    """Set `node`'s keys on the Buildable `config` (recursively)."""
    import fiddle as fdl

    target = fdl.get_callable(config)
    params, open_ended = _parameters(target)
    name = getattr(target, "__qualname__", str(target))
    for key, value in node.items():
        if key in _MARKERS:
            continue
        path = f"{where}.{key}" if where else key
        if params and not open_ended and key not in params:
            close = difflib.get_close_matches(key, list(params), n=2)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            listed = f" Valid keys there: {', '.join(params)}." if len(params) <= 12 else ""
            raise TaskFileError(
                f"{file}: unknown key '{path}': {name} takes no argument '{key}'.{hint}{listed}")
        current = getattr(config, key, None)
        setattr(config, key, _value(file, path, value, params.get(key), current))


def _value(file: Path, path: str, value: Any, param: Any, current: Any) -> Any:
    """A file value as the argument it becomes: sections are built (over the same target in
    `current`, if any), plain values are kept as typed, or parsed by NeMo-Run against the
    parameter's annotation when their type does not fit it (e.g. `torch.bfloat16` as text)."""
    import fiddle as fdl
    import nemo_run as run

    if isinstance(value, dict):
        if "_target_" not in value:
            raise TaskFileError(
                f"{file}: '{path}' is a section without _target_: say which class or function "
                f"builds it (e.g. _target_: package.module.Name), or give a plain value.")
        try:
            target = resolve_target(str(value["_target_"]))
        except LookupError as error:
            raise TaskFileError(f"{file}: {path}._target_: {error}.") from None
        kind = run.Partial if value.get("_partial_") else run.Config
        same = isinstance(current, kind) and fdl.get_callable(current) is target
        config = current if same else kind(target)
        _fill(file, path, config, value)
        return config
    if isinstance(value, list):
        return [_value(file, f"{path}[{i}]", item, None, None) for i, item in enumerate(value)]
    annotation = getattr(param, "annotation", inspect.Parameter.empty)
    if value is None or _fits(value, annotation):
        return value
    from nemo_run.cli.cli_parser import parse_value

    try:
        return parse_value(str(value), annotation)
    except Exception as error:  # noqa: BLE001 - NeMo-Run's parse errors vary
        raise TaskFileError(f"{file}: bad value for '{path}': {value!r} "
                            f"({' '.join(str(error).split())[:200]}).") from None


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a plain value already has a type the annotation allows (unknown: yes)."""
    import typing

    if annotation in (inspect.Parameter.empty, Any, None) or isinstance(annotation, str):
        return True
    origin = typing.get_origin(annotation)
    options = typing.get_args(annotation) if origin in (typing.Union, getattr(
        __import__("types"), "UnionType", None)) else (annotation,)
    for option in options:
        option = typing.get_origin(option) or option
        if option is Any or not isinstance(option, type):
            return True
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return True
        if isinstance(value, option) and not (option is int and isinstance(value, bool)):
            return True
    return False
