"""NeMo 2.0 options that nemo_lite accepts (so NeMo scripts run) but does not act on.

Each one warns when it is set to anything but its default, so a setting never silently does
nothing. Python's warning registry shows each message once per process.
"""

from __future__ import annotations

import warnings
from typing import Any


class IgnoredOptionWarning(UserWarning):
    """An accepted option was set to a value nemo_lite does not act on."""


def warn_if_set(owner: str, name: str, value: Any, default: Any, why: str) -> None:
    """Warn (once) that `owner(name=value)` changes nothing, when `value` is not `default`."""
    if value != default:
        warnings.warn(f"{owner}({name}={value!r}) changes nothing in nemo_lite: {why}",
                      IgnoredOptionWarning, stacklevel=3)
