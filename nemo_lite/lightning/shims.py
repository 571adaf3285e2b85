"""The two kinds of patch nemo_lite makes to torch, megatron-core or Lightning.

- `Shim`: installed once in a process and kept (the CPU redirections of `_cpu.py` and
  `_cpu_moe.py`, installed by MegatronStrategy only when a run computes on the CPU).
- `ScopedPatch`: installed for one call and undone when it returns (`with PATCH.applied():`).

Every patch is one of these, named, with why it exists and the upstream code it targets;
`lightning/patches.py` lists them all in one place (the registry a reader or test starts from).
Where megatron lets a subclass do the job, nemo_lite subclasses instead (its GPT chunk, the
core attention, the norm for sequence parallelism).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shim:
    """A permanent patch: `install()` is idempotent."""

    name: str
    why: str
    install: Callable[[], None]


@dataclass(frozen=True)
class ScopedPatch:
    """`owner.attribute` replaced by `make(original)` while `applied()` is entered."""

    name: str
    why: str
    owner: Callable[[], Any]  # imports and returns the class or module patched
    attribute: str
    make: Callable[[Any], Any]  # the original -> its replacement

    @property
    def target(self) -> str:
        owner = self.owner()
        return f"{owner.__module__}.{owner.__qualname__}.{self.attribute}" if isinstance(
            owner, type) else f"{owner.__name__}.{self.attribute}"

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        owner = self.owner()
        original = getattr(owner, self.attribute)
        setattr(owner, self.attribute, self.make(original))
        try:
            yield
        finally:
            setattr(owner, self.attribute, original)
