"""nemo_lite.lightning: the link between Lightning and Megatron-Core.

Names load on first use, so `from nemo_lite import lightning as nl` costs nothing until
`nl.MegatronStrategy` (and with it Lightning and megatron-core) is actually needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from nemo_lite._lazy import lazy_exports
from nemo_lite.lightning.torchmetrics_imports import TORCHMETRICS_WITHOUT_TRANSFORMERS

TORCHMETRICS_WITHOUT_TRANSFORMERS.install()  # before anything here imports Lightning

_EXPORTS = {
    "MegatronStrategy": "nemo_lite.lightning.strategy",
    "MegatronParallel": "nemo_lite.lightning.parallel",
    "MegatronLossReduction": "nemo_lite.lightning.parallel",
    "MegatronMixedPrecision": "nemo_lite.lightning.precision",
    "MegatronCommOverlapCallback": "nemo_lite.lightning.comm_overlap",
    "Trainer": "nemo_lite.lightning.trainer",
    "MegatronOptimizerModule": "nemo_lite.lightning.optim",
    "CosineAnnealingScheduler": "nemo_lite.lightning.optim",
    "WarmupAnnealingScheduler": "nemo_lite.lightning.optim",
    "ParallelLayout": "nemo_lite.lightning.layout",
    "LayoutError": "nemo_lite.lightning.layout",
    "MegatronPretrainingBatchSampler": "nemo_lite.lightning.sampler",
    "RestoreConfig": "nemo_lite.lightning.resume",
    "AutoResume": "nemo_lite.lightning.resume",
    "NeMoLogger": "nemo_lite.lightning.nemo_logger",
    "ModelCheckpoint": "nemo_lite.lightning.model_checkpoint",
    "PreemptionCallback": "nemo_lite.lightning.preemption",
    "Preempted": "nemo_lite.lightning.preemption",
    "RankWatchdog": "nemo_lite.lightning.rank_watchdog",
    "MegatronCheckpointIO": "nemo_lite.lightning.checkpoint_io",
    "CheckpointError": "nemo_lite.lightning.checkpoint_io",
}

# Modules reachable as attributes, as in NeMo (`nl.lr_scheduler.CosineAnnealingScheduler`,
# `nl.io.load_context(...)`).
_MODULES = {"lr_scheduler": "nemo_lite.lightning.lr_scheduler", "io": "nemo_lite.io"}

__all__ = sorted([*_EXPORTS, *_MODULES])
_export, _export_names = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        module = importlib.import_module(_MODULES[name])
        globals()[name] = module
        return module
    return _export(name)


def __dir__() -> list[str]:
    return sorted([*_export_names(), *_MODULES])
