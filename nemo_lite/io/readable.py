"""A config tree as YAML for people: `_target_: module.Name` plus its arguments.

Only for reading (`config.yaml` beside `io.json`); `load_context` reads the JSON. Python
references (functions, classes, enum members, dtypes) appear as `{_target_: ..., _call_:
false}`, a `fdl.Partial` gets `_partial_: true`, in the Hydra style NeMo uses.
"""

from __future__ import annotations

import enum
from typing import Any

import fiddle as fdl

_PRIMITIVES = (bool, int, float, str, type(None))


def to_plain(value: Any) -> Any:
    """The YAML-ready form of a config tree (dicts, lists and primitives only)."""
    if isinstance(value, _PRIMITIVES):
        return value
    if isinstance(value, fdl.Buildable):
        out: dict[str, Any] = {"_target_": reference_name(fdl.get_callable(value))}
        if isinstance(value, fdl.Partial):
            out["_partial_"] = True
        for name, arg in value.__arguments__.items():
            out[str(name)] = to_plain(arg)
        return out
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return {"_target_": reference_name(value), "_call_": False}


def reference_name(value: Any) -> str:
    from fiddle._src.experimental import serialization

    constant = getattr(serialization, "_serialization_constants_by_id", {}).get(id(value))
    if constant is not None:  # registered by to_config: torch.bfloat16, torch.nn.functional.gelu
        return f"{constant.module}.{constant.symbol}"
    if isinstance(value, enum.Enum):
        cls = type(value)
        return f"{cls.__module__}.{cls.__qualname__}.{value.name}"
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return str(value)  # torch.bfloat16 prints as its import path


def to_yaml(tree: Any) -> str:
    import yaml

    return yaml.safe_dump(to_plain(tree), sort_keys=False, default_flow_style=False)
