"""A checkpoint saved in one parallel layout resumes in another with the same losses.

Each saving run trains 4 steps and checkpoints at step 2 (model, optimizer, LR schedule, data
position). A run in another layout resumes that step-2 checkpoint and trains steps 3-4: its
losses must equal the saving run's own steps 3-4 (fp32, 1e-5 relative). The DP2 saver writes
its checkpoints asynchronously (committed once every rank's background write is done).
"""

from __future__ import annotations

import re

import pytest

from .conftest import read_losses, read_val_losses, run_checkpointed

pytestmark = pytest.mark.distributed

SAVERS = {  # name -> (ranks, run settings)
    "TP1": (1, {}),
    "DP2 distopt async": (2, {"dist_opt": True, "async_save": True}),
    "TP2 distopt fully-reshardable": (2, {"tp": 2, "dist_opt": True, "fully_reshardable": True}),
    "MoE EP2": (2, {"model": "moe", "ep": 2}),
    "TP2+PP2": (4, {"tp": 2, "pp": 2}),
    # 258 ids at megatron's default padding: 384 rows at TP1, 512 at TP2 and TP4 (where rank 3
    # holds padded rows only); checkpoints hold the 258 real rows
    "vocab258 TP1": (1, {"vocab": 258}),
    "vocab258 TP2": (2, {"tp": 2, "vocab": 258}),
    "vocab258 TP2 distopt fully-reshardable": (2, {"tp": 2, "vocab": 258, "dist_opt": True,
                                                   "fully_reshardable": True}),
    "vocab258 TP4": (4, {"tp": 4, "vocab": 258}),
}
LOADS = [  # (saved by, loaded with ranks, the loading run's full settings)
    ("TP2+PP2", 1, {}),
    ("TP1", 4, {"tp": 2, "pp": 2}),
    ("DP2 distopt async", 1, {"dist_opt": True}),
    ("TP2 distopt fully-reshardable", 1, {"dist_opt": True}),
    ("MoE EP2", 1, {"model": "moe"}),
    ("vocab258 TP1", 2, {"tp": 2, "vocab": 258}),
    ("vocab258 TP2", 1, {"vocab": 258}),
    ("vocab258 TP2 distopt fully-reshardable", 1, {"vocab": 258, "dist_opt": True}),
    ("vocab258 TP4", 1, {"vocab": 258}),
]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("reshard")

    def run(name, settings, resume=None):
        return {"name": name, "steps": 4, "save_every": 2, "keep": 3,
                "run_dir": str(work / slug(name)), "losses": str(work / f"{slug(name)}.jsonl"),
                "resume": resume, **settings}

    def checkpoint(saver):
        return str(work / slug(saver) / "checkpoints" / "step=2-consumed_samples=16")

    by_ranks: dict[int, list[dict]] = {1: [], 2: [], 4: []}
    for name, (ranks, settings) in SAVERS.items():
        by_ranks[ranks].append(run(name, settings))
    for saver, ranks, settings in LOADS:
        by_ranks[ranks].append(run(f"{saver} -> {ranks}", settings, resume=checkpoint(saver)))
    # savers before the runs that load them: 1 rank saves TP1 for the 4-rank load, and the
    # 1-rank loads need the 2- and 4-rank savers
    # keep-best-K by a metric: validate every step, keep the 2 *worst* val losses (mode max),
    # which keep-last-K would not
    by_ranks[1].append({**run("keep-worst-2", {}), "val_every": 1, "save_every": None,
                        "monitor": "val_loss", "mode": "max", "keep": 2})
    savers_1 = [r for r in by_ranks[1] if r["resume"] is None]
    loads_1 = [r for r in by_ranks[1] if r["resume"] is not None]
    run_checkpointed(1, savers_1, work, "1a")
    run_checkpointed(2, by_ranks[2], work, "2")
    run_checkpointed(4, by_ranks[4], work, "4")
    run_checkpointed(1, loads_1, work, "1b")
    out = {name: read_losses(work / f"{slug(name)}.jsonl")
           for name in [*SAVERS, *(f"{s} -> {r}" for s, r, _ in LOADS)]}
    out["keep-worst-2"] = {"val": read_val_losses(work / "keep_worst_2.jsonl"),
                           "kept": sorted(p.name for p in (work / "keep_worst_2" / "checkpoints")
                                          .iterdir() if not p.is_symlink())}
    return out


@pytest.mark.parametrize("saver,ranks,settings", LOADS, ids=[f"{s} -> {r} ranks" for s, r, _ in LOADS])
def test_resharded_resume_matches_the_saving_run(results, saver, ranks, settings):
    saved, loaded = results[saver], results[f"{saver} -> {ranks}"]
    assert sorted(saved) == [1, 2, 3, 4] and sorted(loaded) == [3, 4], (saved, loaded)
    for step in (3, 4):
        diff = abs(loaded[step] - saved[step]) / abs(saved[step])
        print(f"RESHARD {saver} -> {ranks} ranks {settings} step {step}: rel diff {diff:.2e}")
        assert diff <= 1e-5, (step, loaded, saved)


def test_keep_best_k_by_a_monitored_metric(results):
    run = results["keep-worst-2"]
    val = run["val"]
    assert sorted(val) == [1, 2, 3, 4], val
    worst = sorted(sorted(val, key=val.get)[-2:])
    assert sorted(int(re.search(r"step=(\d+)", name)[1]) for name in run["kept"]) == worst, run
    assert all("val_loss=" in name for name in run["kept"]), run["kept"]
