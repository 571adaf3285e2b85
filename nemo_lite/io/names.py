"""Where a saved context lives in a checkpoint, and how a saved target is named in messages.

Light on purpose (no fiddle, no torch): the checkpoint code of the lightning layer reads these
names without importing the context machinery.
"""

from __future__ import annotations

from typing import Any

CONTEXT_DIR = "context"  # <checkpoint>/context/
JSON_NAME = "io.json"  # the Fiddle JSON that load_context reads
YAML_NAME = "config.yaml"  # the same config, for reading only


def qualified_name(target: Any) -> str:
    """`module.qualname` of a class or function (for messages)."""
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
