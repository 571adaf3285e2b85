"""Object graph -> Fiddle config tree: the form a run's components are saved in.

Components record how they were built (`IOMixin` / `capture_dataclass` store `__io__`), so
`to_config` rebuilds `fdl.Config(target, **arguments)` from that record rather than from
the object's current state, which training changes. Other dataclasses (megatron's
OptimizerConfig...) are saved by their init fields that differ from the defaults. Functions,
classes, enum members and torch dtypes become references; paths and timedeltas become
Configs of their types; numpy scalars become Python numbers. Anything else cannot be rebuilt
from data, so it is dropped with a warning naming where it was (`trainer.callbacks[1]`).

Plain `fdl.Config` (not `nemo_run.Config`, a subclass): nemo_run imports torch and takes
seconds, and the two compare and serialize alike.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import logging
import pathlib
import sys
import types
from typing import Any

import fiddle as fdl
from fiddle._src.experimental import serialization

from nemo_lite.io.capture import Captured, captured, changed_fields
from nemo_lite.io.errors import ContextError
from nemo_lite.io.names import qualified_name

log = logging.getLogger("nemo_lite.io")

_PRIMITIVES = (bool, int, float, str, bytes, type(None))
# Public homes of C-implemented functions whose own module is private (torch._C._nn.gelu).
_BUILTIN_HOMES = ("torch.nn.functional", "torch", "torch.special", "torch.linalg")


class _Drop(Exception):
    """`value` at `path` cannot be represented; the caller drops it."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


def to_config(obj: Any, name: str | None = None) -> Any:
    """Return `obj` as a Fiddle config tree (`fdl.Config` for objects, containers as is).

    Unrepresentable parts are dropped with a logged warning naming their path from `name`
    (default: the class name, e.g. `Trainer.callbacks[1]`); an unrepresentable `obj` itself
    raises `ContextError`.
    """
    return Converter().root(obj, name or type(obj).__name__)


class Converter:
    """One conversion: objects reached twice (a shared tokenizer) become one shared Config."""

    def __init__(self) -> None:
        self._memo: dict[int, Any] = {}
        self._keep: list[Any] = []  # keeps converted objects alive so their ids stay unique
        self._active: set[int] = set()  # ids being converted: a cycle is dropped, not recursed

    def root(self, obj: Any, path: str) -> Any:
        try:
            return self.convert(obj, path)
        except _Drop as drop:
            raise ContextError(f"cannot save {drop.path} in a config: {drop.why}") from None

    def convert_or_drop(self, value: Any, path: str) -> tuple[bool, Any]:
        """(kept, converted): unrepresentable values are logged and reported as not kept."""
        try:
            return True, self.convert(value, path)
        except _Drop as drop:
            log.warning(
                "nemo_lite.io: dropping %s from the saved config: %s. Set it again after "
                "loading the context.", drop.path, drop.why,
            )
            return False, None

    def convert(self, value: Any, path: str) -> Any:
        if isinstance(value, _PRIMITIVES):
            return value
        if id(value) in self._memo:
            return self._memo[id(value)]
        if id(value) in self._active:
            raise _Drop(path, "it contains itself (a cycle cannot be written as a config)")
        self._active.add(id(value))
        try:
            out = self._convert(value, path)
        finally:
            self._active.discard(id(value))
        if isinstance(out, fdl.Buildable):
            self._memo[id(value)] = out
            self._keep.append(value)
        return out

    def _convert(self, value: Any, path: str) -> Any:
        if isinstance(value, fdl.Buildable):
            return value
        record = captured(value)
        if isinstance(record, Captured) and not isinstance(value, type):
            return self._config(record.target, record.arguments, path)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._config(type(value), changed_fields(value), path)
        if isinstance(value, functools.partial):
            return self._partial(value, path)
        if isinstance(value, pathlib.PurePath):
            return fdl.Config(type(value), str(value))
        if _is_numpy_scalar(value):
            return value.item()
        if isinstance(value, datetime.timedelta):
            parts = {"days": value.days, "seconds": value.seconds,
                     "microseconds": value.microseconds}
            return fdl.Config(datetime.timedelta, **{k: v for k, v in parts.items() if v})
        if isinstance(value, (list, tuple)):
            if isinstance(value, tuple) and hasattr(value, "_fields"):
                raise _Drop(path, f"namedtuple {type(value).__qualname__} is not supported")
            items = [self.convert_or_drop(v, f"{path}[{i}]") for i, v in enumerate(value)]
            kept = [v for ok, v in items if ok]
            return tuple(kept) if isinstance(value, tuple) else kept
        if isinstance(value, dict):
            out = {}
            for key, v in value.items():
                if not isinstance(key, (str, int, bool, float)):
                    raise _Drop(path, f"dict key {key!r} is not a str or number")
                ok, c = self.convert_or_drop(v, f"{path}[{key!r}]")
                if ok:
                    out[key] = c
            return out
        if isinstance(value, (set, frozenset)):
            return type(value)(self.convert(v, f"{path}{{}}") for v in value)
        return self._reference(value, path)

    def _config(self, target: Any, arguments: dict[str, Any], path: str) -> Any:
        self._reference(target, path)  # the target must be importable by name
        kwargs = {}
        for name, v in arguments.items():
            ok, c = self.convert_or_drop(v, f"{path}.{name}")
            if ok:
                kwargs[name] = c
        try:
            return fdl.Config(target, **kwargs)
        except (TypeError, ValueError) as err:
            why = f"{qualified_name(target)} does not accept its recorded arguments ({err})"
            raise _Drop(path, why) from None

    def _partial(self, value: functools.partial, path: str) -> Any:
        func = self._reference(value.func, f"{path}.func")
        args = [self.convert(v, f"{path}.args[{i}]") for i, v in enumerate(value.args)]
        kwargs = {k: self.convert(v, f"{path}.{k}") for k, v in value.keywords.items()}
        try:
            return fdl.Partial(func, *args, **kwargs)
        except (TypeError, ValueError) as err:
            raise _Drop(path, f"functools.partial of {qualified_name(func)}: {err}") from None

    def _reference(self, value: Any, path: str) -> Any:
        """Functions, classes, enum members and torch dtypes are saved by import path."""
        if isinstance(value, enum.Enum):
            cls = type(value)
            if _resolve(cls.__module__, cls.__qualname__) is cls:
                return value
            raise _Drop(path, f"enum {cls.__qualname__} cannot be imported by name")
        if _is_torch_dtype(value):
            name = str(value).rpartition(".")[2]
            _register_constant("torch", name, value, path)
            return value
        if isinstance(value, (type, types.FunctionType, types.MethodType)):
            module = getattr(value, "__module__", None)
            qualname = _qualname(value)
            if module and qualname and _resolve(module, qualname) == value:
                return value
            raise _Drop(path, f"{value!r} cannot be imported by name (a local or lambda?)")
        if isinstance(value, types.BuiltinFunctionType):
            name = getattr(value, "__name__", "")
            homes = (*_BUILTIN_HOMES, getattr(value, "__module__", None) or "")
            for module in homes:
                if module and _resolve(module, name) is value:
                    _register_constant(module, name, value, path)
                    return value
            raise _Drop(path, f"built-in {value!r} cannot be imported by name")
        if callable(value):
            kind = f"an instance of {type(value).__module__}.{type(value).__qualname__}"
            raise _Drop(path, f"{kind} records no constructor arguments")
        raise _Drop(
            path, f"{type(value).__module__}.{type(value).__qualname__} records no constructor "
            "arguments",
        )


def _qualname(value: Any) -> str | None:
    if isinstance(value, types.MethodType) and isinstance(value.__self__, type):
        return f"{value.__self__.__qualname__}.{value.__name__}"  # classmethod
    return getattr(value, "__qualname__", None)


def _resolve(module: str, qualname: str) -> Any:
    """`module.qualname` among loaded modules (imports nothing), or None."""
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        if obj is None or part == "<locals>":
            return None
        obj = getattr(obj, part, None)
    return obj


def _is_numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 \
        and hasattr(value, "item")


def _is_torch_dtype(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.dtype)


def _register_constant(module: str, name: str, value: Any, path: str) -> None:
    """Fiddle's JSON names only types and Python functions; other constants are registered."""
    if _resolve(module, name) is not value:
        raise _Drop(path, f"{value!r} is not importable as {module}.{name}")
    serialization.register_constant(module, name, compare_by_identity=True)
