"""Hugging Face checkpoints in and out: `import_ckpt`, `export_ckpt` (also `llm.import_ckpt`).

Names load on first use: `import nemo_lite.llm.hf` imports neither torch nor megatron.
"""

from __future__ import annotations

from typing import Any

from nemo_lite._lazy import lazy_exports

_EXPORTS = {
    "import_ckpt": "nemo_lite.llm.hf.convert",
    "export_ckpt": "nemo_lite.llm.hf.export",
    "HFCheckpointError": "nemo_lite.llm.hf.source",
    "resolve_source": "nemo_lite.llm.hf.source",
}
__all__ = sorted(_EXPORTS)
_export, _export_names = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    return _export(name)


def __dir__() -> list[str]:
    return _export_names()
