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


def test_lightning_loads_without_transformers_and_torchmetrics_still_works():
    """TORCHMETRICS_WITHOUT_TRANSFORMERS, in fresh processes: Lightning imported through
    nemo_lite loads torchmetrics without transformers (Lightning imported first: with it);
    torchmetrics' other metrics compute either way. The import times are printed, not asserted
    (benchmarks/RESULTS.md has them)."""
    import subprocess
    import sys

    probe = """
import sys, time
start = time.perf_counter()
if sys.argv[1] == "shim":
    import nemo_lite.lightning.strategy
else:
    import lightning.pytorch, nemo_lite.lightning.strategy
seconds = time.perf_counter() - start
import torch, torchmetrics
mean = torchmetrics.MeanMetric()
mean.update(torch.tensor([1.0, 3.0]))
print(sys.argv[1], "transformers" in sys.modules, float(mean.compute()), round(seconds, 2))
"""
    out = {}
    for how in ("shim", "plain"):
        proc = subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        name, loaded, mean, seconds = proc.stdout.split()
        out[name] = (loaded, float(mean), float(seconds))
    print(out)
    assert out["shim"][:2] == ("False", 2.0) and out["plain"][:2] == ("True", 2.0), out


def test_the_checkpoint_results_manager_dies_with_its_rank():
    """CHECKPOINT_RESULTS_QUEUE_FORKED: megatron's results queue works, and its manager process
    is SIGKILLed when the process that started it dies by SIGKILL (no finalizer runs then)."""
    import subprocess
    import sys
    import time

    import psutil

    code = """
import os, signal
import psutil
from nemo_lite.lightning.writer_queue import CHECKPOINT_RESULTS_QUEUE_FORKED
CHECKPOINT_RESULTS_QUEUE_FORKED.install()
from megatron.core.dist_checkpointing.strategies import filesystem_async as fa
getter = getattr(fa, "_get_write_results_queue", None) or fa.get_write_results_queue
queue = getter()
queue.put("written")
assert queue.get() == "written" and getter() is queue
print(" ".join(str(c.pid) for c in psutil.Process().children(recursive=True)), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    children = [int(pid) for pid in proc.stdout.split()]
    assert proc.returncode == -9 and children, (proc.returncode, proc.stderr[-2000:])
    deadline = time.monotonic() + 10
    while alive := [p for p in children if psutil.pid_exists(p)
                    and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]:
        assert time.monotonic() < deadline, f"the manager outlived its rank: {alive}"
        time.sleep(0.1)
