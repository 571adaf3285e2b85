"""nemo_lite.io: a run's configuration as data: captured at construction, saved as Fiddle JSON.

Names load on first use: `import nemo_lite.io` (which every component does, for `IOMixin`)
imports neither fiddle nor torch.
"""

from __future__ import annotations

from nemo_lite._lazy import lazy_exports

_EXPORTS = {
    "save_context": "nemo_lite.io.context",
    "load_context": "nemo_lite.io.context",
    "to_config": "nemo_lite.io.convert",
    "ContextError": "nemo_lite.io.errors",
    "ContextWarning": "nemo_lite.io.errors",
    "IOMixin": "nemo_lite.io.capture",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
