"""Lightning without transformers: a rank starts ~1.5 s sooner.

Lightning imports torchmetrics (for its `Metric` type), and torchmetrics, whenever transformers
is installed, imports transformers' `AutoModel` / `AutoTokenizer` / `CLIPModel` at import time for
three metrics (BERTScore, InfoLM, CLIPScore). That is transformers' whole auto-model machinery,
~1.5 s of CPU in every process that imports Lightning (each rank, each `nemo` command), for
metrics that nemo_lite never computes. (nemo_lite installs transformers for its Hugging Face
import/export, which imports transformers itself, unaffected.)

The shim: before torchmetrics is first imported, a meta-path finder wraps the loading of
`torchmetrics.utilities.imports` so that, once that module has run, its two transformers flags
(`_TRANSFORMERS_GREATER_EQUAL_4_4`, `_4_10`) read False; torchmetrics then skips those imports and
leaves the three metrics out of that process (their constructors say transformers is missing).
Nothing changes where torchmetrics was imported before nemo_lite.lightning.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any, Optional

from nemo_lite.lightning.shims import Shim

TARGET = "torchmetrics.utilities.imports"
FLAGS = ("_TRANSFORMERS_GREATER_EQUAL_4_4", "_TRANSFORMERS_GREATER_EQUAL_4_10")


class _Loader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        for flag in FLAGS:
            if hasattr(module, flag):
                setattr(module, flag, False)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Optional[Any]:
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # once: torchmetrics loads this module once per process
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def _install() -> None:
    if "torchmetrics" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())


TORCHMETRICS_WITHOUT_TRANSFORMERS = Shim(
    "torchmetrics_without_transformers",
    "torchmetrics imports transformers' auto models at import time for BERTScore, InfoLM and "
    "CLIPScore (torchmetrics/functional/text/bert.py, .../multimodal/clip_score.py), ~1.5 s in "
    "every process that imports Lightning; its transformers flags in "
    "torchmetrics.utilities.imports read False, so those three metrics are left out. Installed "
    "when nemo_lite.lightning is first imported, before Lightning.",
    _install)
