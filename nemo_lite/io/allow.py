"""Which callables a saved context may name, decided before anything is imported.

Building a context calls every target it names, so a context is code: a crafted `io.json`
naming `torch.utils.collect_env.run` would run a shell command. `load_context` therefore
checks every Python reference in the JSON (Fiddle stores them as `module` + `name` strings)
against an exact list of names first (`nemo_lite.io.allowed`: what nemo_lite itself saves),
and checks again what each reference resolves to.

A caller who trusts a file may allow more, by exact name or by module prefix
(`allow=["my_steps"]`, NEMO_LITE_CONTEXT_ALLOW); inside a prefix the caller allows, the known
code-loading entry points below stay refused unless named exactly. docs/context-security.md
states the threat model.
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Iterable
from typing import Any

from nemo_lite.io.allowed import ALLOWED

ENV_VAR = "NEMO_LITE_CONTEXT_ALLOW"

_LOADS_CODE = "loads or runs code from files or the network"
# Inside the allowed prefixes, refused unless the caller allows them by name (or more narrowly).
DENIED: dict[str, str] = {
    "torch.load": "unpickles a file (weights_only=False runs code)",
    "torch.serialization": "unpickles files (weights_only=False runs code)",
    "torch.hub": _LOADS_CODE,
    "torch.jit.load": _LOADS_CODE,
    "torch.jit._serialization": _LOADS_CODE,
    "torch.package": _LOADS_CODE,
    "torch.utils.cpp_extension": "compiles and loads code",
    "torch._ops": "loads native libraries",
    "torch._classes": "loads native libraries",
    "torch.library": "registers native operators",
    "torch._utils": "imports names given as strings",
    "torch.multiprocessing": "starts processes",
    "torch.distributed.run": "starts processes",
    "torch.distributed.launch": "starts processes",
    "torch.distributed.launcher": "starts processes",
    "torch.distributed.elastic": "starts processes",
    "lightning.pytorch.cli": "parses the command line and runs",
    "lightning.fabric.cli": "parses the command line and runs",
    "lightning.pytorch.core.saving": _LOADS_CODE,
    "lightning.fabric.utilities.cloud_io": _LOADS_CODE,
    "megatron.core.dist_checkpointing": "reads checkpoint files",
    "fiddle._src.experimental.serialization": "imports names given as strings",
    "fiddle.experimental.serialization": "imports names given as strings",
    "fiddle._src.experimental.lazy_imports": "imports names given as strings",
    "fiddle.experimental.lazy_imports": "imports names given as strings",
    "fiddle._src.experimental.auto_config": "rewrites and runs code",
    "fiddle.experimental.auto_config": "rewrites and runs code",
    "fiddle._src.absl_flags": "imports names given as strings",
    "fiddle.absl_flags": "imports names given as strings",
    "fiddle._src.codegen": "generates code",
    "fiddle.codegen": "generates code",
    "nemo_run.run": "launches jobs",
    "nemo_run.cli": "parses the command line and runs",
    "nemo_lite.cli": "parses the command line and runs",
}


def _matches(full: str, entry: str) -> bool:
    return full == entry or full.startswith(entry + ".")


def _longest(full: str, entries: Iterable[str]) -> str | None:
    hits = [e for e in entries if _matches(full, e)]
    return max(hits, key=len) if hits else None


def env_entries() -> tuple[str, ...]:
    """The comma-separated module prefixes / `module.name`s in NEMO_LITE_CONTEXT_ALLOW."""
    return tuple(e.strip() for e in os.environ.get(ENV_VAR, "").split(",") if e.strip())


class AllowList:
    """The default allow-list plus the caller's `allow=` entries and NEMO_LITE_CONTEXT_ALLOW."""

    def __init__(self, allow: Iterable[str] = (), use_env: bool = True) -> None:
        if isinstance(allow, str):
            allow = [allow]
        self.user = tuple(a.strip() for a in allow if a and a.strip())
        if use_env:
            self.user += env_entries()

    def refusal(self, module: Any, name: Any) -> str | None:
        """Why the reference `module` + `name` (as written in the JSON) is refused, or None."""
        if not isinstance(module, str) or not isinstance(name, str) or not module or not name:
            return "it is not a valid module/name reference"
        if any(part.startswith("__") or not part for part in name.split(".")):
            return "it reaches through a private attribute"
        return self._refusal_full(f"{module}.{name}")

    def _refusal_full(self, full: str) -> str | None:
        if full in ALLOWED:
            return None
        user = _longest(full, self.user)
        if user is None:
            return "it is outside the allow-list"
        denied = _longest(full, DENIED)
        if denied is not None and len(denied) > len(user):
            return f"refused by default: it {DENIED[denied]}"
        return None

    def value_refusal(self, written: str, value: Any) -> str | None:
        """Why `value`, imported as `written`, is refused, or None. An exact name (on the
        list, or `allow=["torch.load"]`) is trusted to be what it resolves to; a name allowed
        by a caller's prefix is judged by where its value is defined, which catches aliases
        like `my_module.os.system`."""
        if written in ALLOWED or written in self.user:
            return None
        home = home_of(value)
        if home is None:
            return "cannot tell which module defines it"
        reason = self._refusal_full(home)
        if reason is None and isinstance(value, functools.partial):
            return self.value_refusal(written, value.func)
        if reason is not None and home != written:
            return f"it resolves to {home}, which is {reason.removeprefix('it is ')}"
        return reason


def home_of(value: Any) -> str | None:
    """`module.qualname` of where `value` (or, for a constant, its type) is defined."""
    if isinstance(value, types.ModuleType):
        return value.__name__
    owner = getattr(value, "__self__", None)
    if isinstance(value, (types.MethodType, types.BuiltinMethodType)) and owner is not None \
            and not isinstance(owner, types.ModuleType):
        cls = owner if isinstance(owner, type) else type(owner)
        return f"{cls.__module__}.{cls.__qualname__}.{value.__name__}"
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        if not isinstance(module, str) or not isinstance(qualname, str):
            return None
        return f"{module}.{qualname}"
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_defaults() -> str:
    return (f"the {len(ALLOWED)} names nemo_lite itself saves (nemo_lite.io.allowed: its "
            "components and recipes, megatron's config dataclasses, torch dtypes, activation "
            "and init functions, plain data types)")


def refusal_message(where: str, refused: list[tuple[str, str]], imported: bool) -> str:
    """The error for refused references: what, why, and how to allow them if trusted."""
    lines = [f"{where}: the saved context names callables that may not be loaded:"]
    lines += [f"  - `{full}`: {reason}" for full, reason in refused]
    lines.append(
        "Nothing was built." if imported else "Nothing was imported or built."
    )
    first = refused[0][0]
    lines.append(
        f"Allowed by default: {describe_defaults()}. If you trust this checkpoint, allow them "
        f"explicitly: load_context(..., allow=[{first!r}]) or {ENV_VAR}={first} "
        "(comma-separated; module prefixes work too)."
    )
    return "\n".join(lines)


def resolve_name(full: str) -> Any:
    """The object `full` (`package.module.Attr.attr`) names, importing its module; None if
    nothing has that name. For checks of the list itself, never for an unchecked context."""
    import importlib

    parts = full.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            obj = getattr(obj, part, None)
            if obj is None:
                return None
        return obj
    return None
