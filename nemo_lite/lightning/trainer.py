"""Trainer: Lightning's Trainer with the defaults a Megatron run needs.

Defaults only, plus one check: Megatron's sampler already shards data over data-parallel
ranks (so Lightning must not add a DistributedSampler); evaluation runs under no_grad
rather than inference_mode (megatron modules keep state between steps); checkpoints come from
`nl.ModelCheckpoint` when one is given (here, or by NeMoLogger), never from Lightning's
default callback (it would write a `.ckpt` per epoch); Lightning's model table and start-up
chatter give way to nemo_lite's run summary (`quiet.py`); `fit` / `validate` check the
parallel layout before Lightning spawns any rank, so a bad layout fails in the launching
process with one clear error; and unless given, a `PreemptionCallback` (a scheduler's
SIGTERM / SIGUSR1 ends `fit` with a checkpoint and `Preempted`, exit code 75) and a
`RankWatchdog` (a stopped rank fails the job within 2 minutes, naming it) are there.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.quiet import quiet_run


class Trainer(pl.Trainer, IOMixin):
    def __init__(self, *args: Any, recipe: str | None = None, resilience: bool = True,
                 **kwargs: Any) -> None:
        """Lightning's Trainer with nemo_lite's defaults. `recipe`: the recipe this run came
        from, which the start-of-run summary names (`nemo llm ... --factory NAME` sets it).
        `resilience=False`: no default PreemptionCallback / RankWatchdog (given ones stay)."""
        self.recipe = recipe
        kwargs.setdefault("use_distributed_sampler", False)
        kwargs.setdefault("inference_mode", False)
        # Checkpointing left at its default: NeMoLogger adds an nl.ModelCheckpoint under the run
        # directory (NeMo writes checkpoints there by default); enable_checkpointing=False: none.
        self.default_checkpointing = "enable_checkpointing" not in kwargs
        kwargs.setdefault("enable_checkpointing", any(
            isinstance(cb, ModelCheckpoint) for cb in kwargs.get("callbacks") or []))
        kwargs.setdefault("logger", False)
        # a scheduler's SIGTERM / SIGUSR1: checkpoint an agreed step, exit 75 (preemption.py)
        # and a rank that stops: the job fails within 2 minutes, naming it (rank_watchdog.py)
        from nemo_lite.lightning.preemption import PreemptionCallback
        from nemo_lite.lightning.rank_watchdog import RankWatchdog

        callbacks = list(kwargs.get("callbacks") or [])
        for kind in (PreemptionCallback, RankWatchdog) if resilience else ():
            if not any(isinstance(c, kind) for c in callbacks):
                callbacks.append(kind())
        kwargs["callbacks"] = callbacks
        # nemo_lite's start-of-run summary replaces Lightning's model table (whose FLOPs
        # column reads 0 for megatron modules)
        kwargs.setdefault("enable_model_summary", False)
        quiet_run()
        super().__init__(*args, **kwargs)

    def use_run_dir(self, path: str) -> None:
        """Make `path` (NeMoLogger's run directory) Lightning's `default_root_dir`: where its
        profilers and default loggers write, and what the run summary names."""
        self._default_root_dir = path

    def _validate_layout(self, model: Any, datamodule: Any) -> None:
        from nemo_lite.lightning.strategy import MegatronStrategy

        if isinstance(self.strategy, MegatronStrategy):
            self.strategy.validate_run(model, datamodule)

    def fit(self, model: Any, train_dataloaders: Any = None, val_dataloaders: Any = None,
            datamodule: Any = None, ckpt_path: Any = None, weights_only: Any = None) -> None:
        from nemo_lite.lightning.preemption import PreemptionCallback

        data = datamodule if datamodule is not None else train_dataloaders
        self._validate_layout(model, data if isinstance(data, pl.LightningDataModule) else None)
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path,
                    weights_only=weights_only)
        for callback in self.callbacks:  # stopped on a scheduler's signal: exit code 75
            if isinstance(callback, PreemptionCallback) and callback.stopped is not None:
                raise callback.stopped

    def validate(self, model: Any = None, dataloaders: Any = None, ckpt_path: Any = None,
                 verbose: bool = True, datamodule: Any = None, weights_only: Any = None) -> Any:
        data = datamodule if datamodule is not None else dataloaders
        if model is not None:
            self._validate_layout(model, data if isinstance(data, pl.LightningDataModule) else None)
        return super().validate(model, dataloaders, ckpt_path, verbose, datamodule,
                                weights_only=weights_only)


# Lightning's arguments, visible to Fiddle and NeMo-Run (`trainer.max_steps=20` on the command
# line is parsed by the type of Trainer's `max_steps`); __init__ passes them all through.
# Plus nemo_lite's own keywords, `recipe` and `resilience`.
_lightning = inspect.signature(pl.Trainer.__init__)
Trainer.__init__.__signature__ = _lightning.replace(parameters=[  # type: ignore[attr-defined]
    *_lightning.parameters.values(),
    inspect.Parameter("recipe", inspect.Parameter.KEYWORD_ONLY, default=None,
                      annotation="str | None"),
    inspect.Parameter("resilience", inspect.Parameter.KEYWORD_ONLY, default=True,
                      annotation="bool")])
