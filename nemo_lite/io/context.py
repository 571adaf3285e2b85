"""The run's config beside its weights: `<ckpt>/context/io.json` (+ a readable config.yaml).

`save_context` converts the trainer, model and data module (and any extras) to one Fiddle
config tree and writes it with Fiddle's own JSON serialization: references to code are
`module` + `name` strings, values are data, nothing is pickled. `load_context` checks every
reference against the allow-list before importing anything, then rebuilds the configs (and,
by default, the objects). Fields the installed code no longer accepts are skipped with a
warning, so a context outlives small API changes in megatron-core or Lightning.
"""

from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fiddle as fdl
from fiddle._src.experimental import serialization

from nemo_lite.io.allow import AllowList, refusal_message
from nemo_lite.io.errors import ContextError, ContextWarning
from nemo_lite.io.names import CONTEXT_DIR, JSON_NAME, YAML_NAME, qualified_name

_YAML_HEADER = (
    "# The run's config, for reading. load_context() reads io.json beside it; edits here "
    "are not loaded.\n"
)


def save_context(
    path: str | os.PathLike[str],
    trainer: Any = None,
    model: Any = None,
    data: Any = None,
    **extra: Any,
) -> Path:
    """Write `path/context/io.json` and `config.yaml` for the given components.

    Call it on one rank (the caller decides which). Parts that cannot be represented are
    dropped with a logged warning. Returns the context directory.
    """
    from nemo_lite.io.convert import Converter
    from nemo_lite.io.readable import to_yaml

    converter = Converter()
    tree: dict[str, Any] = {}
    for name, obj in {"trainer": trainer, "model": model, "data": data, **extra}.items():
        if obj is None:
            continue
        kept, config = converter.convert_or_drop(obj, name)
        if kept:
            tree[name] = config
    try:
        text = serialization.dump_json(tree, indent=1)
    except (serialization.UnserializableValueError, serialization.PyrefPolicyError) as err:
        raise ContextError(f"save_context: the config cannot be written as JSON: {err}") from err

    directory = Path(path) / CONTEXT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomically(directory / JSON_NAME, text + "\n")
    _write_atomically(directory / YAML_NAME, _YAML_HEADER + to_yaml(tree))
    return directory


def load_context(
    path: str | os.PathLike[str],
    subpath: str | None = None,
    build: bool = True,
    allow: Sequence[str] = (),
) -> Any:
    """Read a context saved by `save_context`; `path` is the checkpoint or its context/ dir.

    `subpath` ("model", "trainer.strategy", ...) selects one part. `build=False` returns
    Fiddle configs instead of objects. Every callable the JSON names must be allowed (see
    `nemo_lite.io.allow`); `allow` adds module prefixes or `module.name`s to the defaults,
    as does the NEMO_LITE_CONTEXT_ALLOW environment variable (comma-separated).
    """
    json_file = _find(Path(path))
    data = _read(json_file)
    allow_list = AllowList(allow)

    refused: dict[str, str] = {}
    for module, name in _references(data):
        reason = allow_list.refusal(module, name)
        if reason is not None:
            refused.setdefault(f"{module}.{name}", reason)
    if refused:
        raise ContextError(refusal_message(str(json_file), list(refused.items()), imported=False))

    tree = _deserialize(data, allow_list, json_file)
    _skip_unknown_arguments(tree, "", set())
    part = _select(tree, subpath, json_file)
    return fdl.build(part) if build and _has_buildable(part) else part


def _write_atomically(target: Path, text: str) -> None:
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def _find(path: Path) -> Path:
    if not path.exists():
        raise ContextError(
            f"load_context: {path} does not exist (expected a checkpoint directory holding "
            f"{CONTEXT_DIR}/{JSON_NAME}, or that {CONTEXT_DIR}/ directory itself)."
        )
    if path.is_file():
        return path
    for candidate in (path / CONTEXT_DIR / JSON_NAME, path / JSON_NAME):
        if candidate.is_file():
            return candidate
    raise ContextError(
        f"load_context: no saved context in {path}: expected {path / CONTEXT_DIR / JSON_NAME} "
        "(written by nemo_lite.io.save_context when the checkpoint was saved)."
    )


def _read(json_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ContextError(f"load_context: {json_file} is not UTF-8 text ({err}).") from None
    except json.JSONDecodeError as err:
        raise ContextError(
            f"load_context: {json_file} is not valid JSON (line {err.lineno}, column "
            f"{err.colno}: {err.msg}); the file is truncated or corrupt."
        ) from None
    if not isinstance(data, dict) or "root" not in data or not isinstance(data.get("objects"), dict):
        raise ContextError(
            f"load_context: {json_file} is JSON but not a Fiddle config serialization "
            "(it needs 'root' and 'objects' keys, as written by save_context)."
        )
    return data


def _references(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every `{"type": "pyref", "module": ..., "name": ...}` in the JSON, wherever it is."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == "pyref":
                yield item.get("module"), item.get("name")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


class _Policy(serialization.PyrefPolicy):
    """Fiddle's import hook: re-checks each name and what it resolves to (aliases)."""

    def __init__(self, allow_list: AllowList, where: str) -> None:
        self.allow_list = allow_list
        self.where = where
        self.current = ""

    def allows_import(self, module: str, symbol: str) -> bool:
        self.current = f"{module}.{symbol}"
        reason = self.allow_list.refusal(module, symbol)
        if reason is not None:
            raise ContextError(refusal_message(self.where, [(self.current, reason)], False))
        return True

    def allows_value(self, value: Any) -> bool:
        reason = self.allow_list.value_refusal(self.current, value)
        if reason is not None:
            raise ContextError(refusal_message(self.where, [(self.current, reason)], True))
        return True


def _deserialize(data: dict[str, Any], allow_list: AllowList, json_file: Path) -> Any:
    try:
        return serialization.Deserialization(data, _Policy(allow_list, str(json_file))).result
    except ContextError:
        raise
    except ImportError as err:
        raise ContextError(
            f"load_context: {json_file} names a module that cannot be imported here ({err}); "
            "was it saved with code that is not installed (or was renamed)?"
        ) from err
    except AttributeError as err:
        raise ContextError(
            f"load_context: {json_file} names something the installed code does not have "
            f"({err}); was it saved with a different version?"
        ) from err
    except (serialization.DeserializationError, KeyError, TypeError, ValueError) as err:
        raise ContextError(
            f"load_context: {json_file} is not a valid Fiddle config serialization "
            f"({type(err).__name__}: {err})."
        ) from err


def _skip_unknown_arguments(node: Any, path: str, seen: set[int]) -> None:
    """Drop (with a warning) arguments a target no longer accepts, e.g. a removed field."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, fdl.Buildable):
        target = fdl.get_callable(node)
        accepted = _accepted_names(target)
        for name in list(node.__arguments__):
            if accepted is not None and isinstance(name, str) and name not in accepted:
                value = repr(node.__arguments__[name])
                where = f"{path}.{name}" if path else name
                warnings.warn(
                    f"load_context: skipping `{where}`: {qualified_name(target)} no longer accepts "
                    f"`{name}` (saved value {value[:80]}); the context was saved with another "
                    "version of that code.",
                    ContextWarning,
                    stacklevel=2,
                )
                delattr(node, name)
        for name, value in node.__arguments__.items():
            _skip_unknown_arguments(value, f"{path}.{name}" if path else str(name), seen)
    elif isinstance(node, dict):
        for key, value in node.items():
            _skip_unknown_arguments(value, f"{path}.{key}" if path else str(key), seen)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _skip_unknown_arguments(value, f"{path}[{i}]", seen)


def _accepted_names(target: Any) -> set[str] | None:
    """Keyword names `target` accepts, or None when it takes **kwargs or has no signature."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}


def _has_buildable(node: Any) -> bool:
    """fdl.build warns on plain values (a subpath like "data.seq_length"); skip it there."""
    if isinstance(node, fdl.Buildable):
        return True
    if isinstance(node, dict):
        return any(_has_buildable(v) for v in node.values())
    if isinstance(node, (list, tuple, set, frozenset)):
        return any(_has_buildable(v) for v in node)
    return False


def _select(tree: Any, subpath: str | None, json_file: Path) -> Any:
    if not subpath:
        return tree
    node = tree
    for part in subpath.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, fdl.Buildable) and part in node.__arguments__:
            node = node.__arguments__[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            if isinstance(node, fdl.Buildable):
                names = list(node.__arguments__)
            else:
                names = list(node) if isinstance(node, dict) else []
            raise ContextError(
                f"load_context: {json_file} has no `{subpath}` (no `{part}` there; "
                f"available: {', '.join(map(str, names)) or 'nothing'})."
            )
    return node
