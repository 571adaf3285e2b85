"""Recording the arguments a component was built with, so its config can be saved and rebuilt.

A nemo_lite component (strategy, precision, trainer, model, data module, optimizer module...)
inherits `IOMixin`: the outermost `__init__` call stores `(class, bound arguments)` on the
instance as `__io__`. Nothing is converted here (no fiddle import): `nemo_lite.io`
turns the recorded arguments into a Fiddle config only when a checkpoint's context is written.
Only plain lists/dicts/sets are copied, so in-place changes to them (Lightning extending the
callbacks list) do not leak into the record.

Dataclass configs (GPTConfig...) record their init fields in `__post_init__` through
`capture_dataclass`, before megatron's own `__post_init__` derives fields from them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any

IO_ATTR = "__io__"


@dataclass
class Captured:
    """What an object was built from: `target(**arguments)`."""

    target: Any
    arguments: dict[str, Any] = field(default_factory=dict)


def captured(obj: Any) -> Captured | None:
    return getattr(obj, IO_ATTR, None)


def _detached(value: Any) -> Any:
    """A copy of plain containers (not of what they hold): Lightning appends its own
    callbacks to the list a user passed, which must not change what was recorded."""
    if type(value) is list:
        return [_detached(v) for v in value]
    if type(value) is dict:
        return {k: _detached(v) for k, v in value.items()}
    if type(value) is set:
        return {_detached(v) for v in value}
    return value


def _bound_arguments(init: Any, self: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    signature = inspect.signature(init)
    bound = signature.bind(self, *args, **kwargs)
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:  # drop `self`
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update({k: _detached(v) for k, v in value.items()})
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(f"{type(self).__name__}: *args cannot be recorded in a config")
        else:
            out[name] = _detached(value)
    return out


class IOMixin:
    """Records the outermost `__init__` arguments of every subclass instance as `__io__`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records_io", False):
            return

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kw: Any) -> None:
            if IO_ATTR not in self.__dict__:  # the outermost call records; super() calls don't
                object.__setattr__(
                    self, IO_ATTR, Captured(type(self), _bound_arguments(init, self, args, kw))
                )
            init(self, *args, **kw)

        __init__._records_io = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]


def record(obj: Any, **arguments: Any) -> None:
    """Add `arguments` to what `obj` records it was built with (its saved context rebuilds
    them): for an argument given to a component after it was built, e.g. the optimizer that
    `llm.pretrain(optim=...)` hands to the model. A component that records nothing is left as is.
    """
    recorded = captured(obj)
    if isinstance(recorded, Captured):
        recorded.arguments.update({k: _detached(v) for k, v in arguments.items()})


def changed_fields(obj: Any) -> dict[str, Any]:
    """A dataclass's init fields whose values differ from their defaults."""
    out = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            out[f.name] = value
            continue
        try:
            same = value is default or bool(value == default)
        except Exception:  # e.g. tensors compare elementwise
            same = False
        if not same:
            out[f.name] = value
    return out


def capture_dataclass(obj: Any) -> None:
    """Record a dataclass's init fields that differ from their defaults (call in __post_init__)."""
    if IO_ATTR in obj.__dict__:
        return
    arguments = {name: _detached(value) for name, value in changed_fields(obj).items()}
    object.__setattr__(obj, IO_ATTR, Captured(type(obj), arguments))
