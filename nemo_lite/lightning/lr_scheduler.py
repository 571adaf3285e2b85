"""NeMo 2.0's `nl.lr_scheduler` namespace (`nl.lr_scheduler.CosineAnnealingScheduler(...)`):
the learning-rate schedules nemo_lite has, under the module name NeMo scripts use."""

from nemo_lite.lightning.optim import CosineAnnealingScheduler, WarmupAnnealingScheduler

__all__ = ["CosineAnnealingScheduler", "WarmupAnnealingScheduler"]
