"""The registry of patches (nemo_lite/lightning/patches.py): every patch named, with its reason
and its target, scoped patches undone after their call. (That nothing else assigns to torch,
megatron or Lightning is checked in test_architecture.py.)"""

from __future__ import annotations

import pytest

from nemo_lite.lightning import patches


def test_every_patch_is_named_once_with_a_reason():
    everything = [*patches.permanent(), *patches.scoped()]
    names = [p.name for p in everything]
    assert len(names) == len(set(names)), names
    assert all(len(p.why) > 40 for p in everything), [p.name for p in everything if len(p.why) <= 40]
    assert {"device_redirect", "rng_state", "grad_scaler_load", "weights_only_objects",
            "adam_step_loaded_separately"} <= set(names)


@pytest.mark.parametrize("patch", patches.scoped(), ids=lambda p: p.name)
def test_scoped_patches_target_real_code_and_undo_themselves(patch):
    owner = patch.owner()
    original = getattr(owner, patch.attribute)
    assert patch.target.endswith(patch.attribute) and callable(original)
    with patch.applied():
        assert getattr(owner, patch.attribute) is not original
    assert getattr(owner, patch.attribute) is original
