"""RestoreConfig: start a run from weights saved by another (possibly differently split) run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestoreConfig:
    """NeMo 2.0's RestoreConfig: `path` to a checkpoint; weights only unless asked otherwise."""

    path: str
    load_model_state: bool = True
    load_optim_state: bool = False
    load_artifacts: bool = False
