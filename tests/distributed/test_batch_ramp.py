"""Ramp-up batch size (`rampup_batch_size=[start, increment, ramp_samples]`) on CPU ranks.

One schedule, global batch 4 -> 16 by 4 over 48 samples (micro-batch 2): steps of 4, 4, 4, 4,
8, 8, 12, 12, then 16. A DP2 run gives the losses of a one-rank run of the same schedule (fp32,
1e-5: the same samples in each step, split over two ranks), and a DP2 run stopped at step 3 (in
the ramp) and resumed from its checkpoint continues with the same global batches, consumed
samples and losses as the uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._support.ranks import read_losses, run_checkpointed

pytestmark = pytest.mark.distributed

STEPS = 10
RAMP = {"gbs": 16, "mbs": 2, "rampup": [4, 4, 48], "steps": STEPS, "sched_steps": STEPS,
        "save_every": 3, "keep": 5}
SIZES = [4, 4, 4, 4, 8, 8, 12, 12, 16, 16]


def records(path: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines()) if "loss" in r}


def test_a_ramp_on_two_ranks_matches_one_rank_and_resumes_mid_ramp(tmp_path):
    runs = {name: {**RAMP, "name": name, "run_dir": str(tmp_path / name),
                   "losses": str(tmp_path / f"{name}.jsonl")}
            for name in ("one_rank", "dp2", "dp2_resumed")}
    run_checkpointed(1, [runs["one_rank"]], tmp_path, "one_rank")
    saved = tmp_path / "dp2" / "checkpoints" / "step=3-consumed_samples=12"
    runs["dp2_resumed"]["resume"] = str(saved)
    run_checkpointed(2, [runs["dp2"], runs["dp2_resumed"]], tmp_path, "dp2")
    assert saved.is_dir(), sorted(p.name for p in saved.parent.iterdir())

    one, dp2, resumed = (records(Path(runs[n]["losses"]))
                         for n in ("one_rank", "dp2", "dp2_resumed"))
    assert [dp2[s]["global_batch"] for s in range(1, STEPS + 1)] == SIZES
    assert [dp2[s]["consumed"] for s in range(1, STEPS + 1)] == \
        [sum(SIZES[:s]) for s in range(1, STEPS + 1)]
    worst = max(abs(dp2[s]["loss"] - one[s]["loss"]) / abs(one[s]["loss"]) for s in one)
    print(f"ramp 4 -> 16, {STEPS} steps: DP2 vs 1 rank, largest relative loss difference "
          f"{worst:.2e}")
    assert sorted(one) == sorted(dp2) == list(range(1, STEPS + 1)) and worst <= 1e-5
    assert sorted(resumed) == list(range(4, STEPS + 1))
    for step in resumed:
        assert resumed[step]["global_batch"] == dp2[step]["global_batch"]
        assert resumed[step]["consumed"] == dp2[step]["consumed"]
        assert abs(resumed[step]["loss"] - dp2[step]["loss"]) <= 1e-6 * abs(dp2[step]["loss"]), (
            step, resumed, dp2)
    assert read_losses(runs["dp2"]["losses"])[STEPS] == dp2[STEPS]["loss"]
