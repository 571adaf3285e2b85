"""Options nemo_lite accepts for NeMo 2.0 scripts but does not act on warn when set, once each;
their defaults stay silent. (The ones it does act on are tested where they act: the checkpoint
save options in tests/distributed/test_checkpoint_reshard.py, RestoreConfig(load_optim_state)
there too.)"""

from __future__ import annotations

import warnings

import pytest

from nemo_lite import lightning as nl
from nemo_lite.lightning.ignored_options import IgnoredOptionWarning

SET = {
    "MegatronStrategy lazy_init": (nl.MegatronStrategy, {"lazy_init": True}),
    "MegatronStrategy ckpt_parallel_save_optim": (nl.MegatronStrategy,
                                                  {"ckpt_parallel_save_optim": False}),
    "MegatronStrategy ckpt_load_directly_on_device": (nl.MegatronStrategy,
                                                      {"ckpt_load_directly_on_device": False}),
    "AutoResume resume_past_end": (nl.AutoResume, {"resume_past_end": True}),
    "ModelCheckpoint save_optim_on_train_end": (nl.ModelCheckpoint,
                                                {"save_optim_on_train_end": False}),
    "ModelCheckpoint always_save_context": (nl.ModelCheckpoint, {"always_save_context": False}),
    "ModelCheckpoint save_context_on_train_end": (nl.ModelCheckpoint,
                                                  {"save_context_on_train_end": False}),
    "CosineAnnealingScheduler interval": (nl.CosineAnnealingScheduler, {"interval": "epoch"}),
    "CosineAnnealingScheduler frequency": (nl.CosineAnnealingScheduler, {"frequency": 2}),
    "WarmupAnnealingScheduler monitor": (nl.WarmupAnnealingScheduler, {"monitor": "train_loss"}),
    "RestoreConfig load_artifacts": (nl.RestoreConfig, {"path": "/x", "load_artifacts": True}),
}


@pytest.mark.parametrize("case", sorted(SET))
def test_a_set_option_that_changes_nothing_warns(case):
    cls, kwargs = SET[case]
    name = case.split()[1]
    with pytest.warns(IgnoredOptionWarning, match=rf"{cls.__name__}\({name}=.*changes nothing"):
        cls(**kwargs)


@pytest.mark.parametrize("cls,kwargs", [
    (nl.MegatronStrategy, {}), (nl.AutoResume, {}), (nl.ModelCheckpoint, {}),
    (nl.CosineAnnealingScheduler, {}), (nl.RestoreConfig, {"path": "/x"}),
])
def test_defaults_are_silent(cls, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredOptionWarning)
        cls(**kwargs)


def test_each_message_shows_once_per_process():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default", IgnoredOptionWarning)
        for _ in range(3):
            nl.CosineAnnealingScheduler(frequency=3)
    assert sum(issubclass(w.category, IgnoredOptionWarning) for w in caught) == 1


def test_restore_of_the_optimizer_needs_the_weights():
    with pytest.raises(ValueError, match="load both or neither"):
        nl.RestoreConfig(path="/x", load_model_state=False, load_optim_state=True)
