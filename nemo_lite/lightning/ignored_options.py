"""NeMo 2.0 options that nemo_lite accepts (so NeMo scripts run) but does not act on.

Each one warns when it is set to anything but its default, so a setting never silently does
nothing. Python's warning registry shows each message once per process.
"""

from __future__ import annotations

import warnings
from typing import Any


class IgnoredOptionWarning(UserWarning):
    """An accepted option was set to a value nemo_lite does not act on."""


def warn_if_set(owner: str, name: str, value: Any, default: Any, why: str,
                stacklevel: int = 3) -> None:
    """Warn (once) that `owner(name=value)` changes nothing, when `value` is not `default`."""
    if value != default:
        warnings.warn(f"{owner}({name}={value!r}) changes nothing in nemo_lite: {why}",
                      IgnoredOptionWarning, stacklevel=stacklevel)


def warn_ignored_strategy_options(lazy_init: bool, ckpt_parallel_save_optim: bool,
                                  ckpt_load_directly_on_device: bool) -> None:
    """MegatronStrategy's NeMo options that nemo_lite does not act on (warned at the user's
    MegatronStrategy(...) line)."""
    for name, value, default, why in (
            ("lazy_init", lazy_init, False,
             "the model is built on each rank when the run starts, never before"),
            ("ckpt_parallel_save_optim", ckpt_parallel_save_optim, True,
             "the optimizer state is saved with the weights' save strategy; its form is chosen "
             "by ckpt_optim_fully_reshardable"),
            ("ckpt_load_directly_on_device", ckpt_load_directly_on_device, True,
             "checkpoints always load straight into the model's own tensors")):
        warn_if_set("MegatronStrategy", name, value, default, why, stacklevel=4)
