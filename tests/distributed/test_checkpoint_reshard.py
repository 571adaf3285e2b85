"""A checkpoint saved in one parallel layout resumes in another with the same losses.

Each saving run trains 4 steps and checkpoints at step 2 (model, optimizer, LR schedule, data
position). A run in another layout resumes that step-2 checkpoint and trains steps 3-4: its
losses must equal the saving run's own steps 3-4 (1e-6 relative). The DP2 saver writes
its checkpoints asynchronously (committed once every rank's background write is done).

In bf16-mixed and 16-mixed the fp32 main weights, Adam moments and the loss scaler come back
as saved: the main weights' fingerprint after the load equals the saver's after step 2 (any
layout), and the losses match to 1e-6 at the same TP. A TP change in half precision computes
the same weights with other roundings (row-parallel partial sums are added in bf16/fp16), so
there the losses may differ from the saver's as much as a run at that TP differs from the
saver's from the start (steps 1-4 of a fresh TP2 run, measured in the same launch), twice over. A weights-only load (main weights re-derived from the half-precision
weights) is the control: its fingerprint must differ.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests._support.ranks import read_losses, read_val_losses, run_checkpointed

pytestmark = pytest.mark.distributed

SAVERS = {  # name -> (ranks, run settings)
    "TP1": (1, {}),
    "DP2 distopt async": (2, {"dist_opt": True, "async_save": True}),
    # with megatron's save options: 1 file per writing rank, the save plan cached across saves
    "TP2 distopt fully-reshardable": (2, {"tp": 2, "dist_opt": True, "fully_reshardable": True,
                                          "ckpt_options": {"ckpt_torch_dist_multiproc": 1,
                                                           "ckpt_assume_constant_structure": True}}),
    "MoE EP2": (2, {"model": "moe", "ep": 2}),
    "TP2+PP2": (4, {"tp": 2, "pp": 2, "ckpt_options": {"ckpt_parallel_save_within_dp": False}}),
    # 258 ids at megatron's default padding: 384 rows at TP1, 512 at TP2 and TP4 (where rank 3
    # holds padded rows only); checkpoints hold the 258 real rows
    "vocab258 TP1": (1, {"vocab": 258}),
    "vocab258 TP2": (2, {"tp": 2, "vocab": 258}),
    "vocab258 TP2 distopt fully-reshardable": (2, {"tp": 2, "vocab": 258, "dist_opt": True,
                                                   "fully_reshardable": True}),
    "vocab258 TP4": (4, {"tp": 4, "vocab": 258}),
    # half precision: the fp32 main weights, Adam moments and the fp16 loss scaler come back as
    # saved (re-deriving the main weights from the bf16/fp16 ones changes the next updates)
    # (fp16: a loss scale small enough for per-token loss sums, so no step is skipped)
    **{f"{label} DP2{name}": (2, {"precision": precision, "loss_scale": 8.0, **extra})
       for label, precision in (("bf16", "bf16-mixed"), ("fp16", "16-mixed"))
       for name, extra in (("", {}), (" distopt", {"dist_opt": True}),
                           (" distopt fully-reshardable", {"dist_opt": True,
                                                           "fully_reshardable": True}))},
}
HALF = [(label, {"precision": precision, "loss_scale": 8.0})
        for label, precision in (("bf16", "bf16-mixed"), ("fp16", "16-mixed"))]
# fresh runs at TP2 (same initial weights and batches as DP2): TP2's roundings against DP2's
NOISE = {f"{label} TP2 fresh": (2, {**half, "tp": 2}) for label, half in HALF}
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
    *[load for label, half in HALF for load in (
        (f"{label} DP2", 2, half),
        (f"{label} DP2", 1, half),
        (f"{label} DP2", 2, {**half, "tp": 2}),
        (f"{label} DP2 distopt", 2, {**half, "dist_opt": True}),
        (f"{label} DP2 distopt", 1, {**half, "dist_opt": True}),
        (f"{label} DP2 distopt fully-reshardable", 2, {**half, "dist_opt": True, "tp": 2}),
    )],
]
WEIGHTS_ONLY = [(f"{label} DP2", 2, {**half, "load_optimizer": False}) for label, half in HALF]
# RestoreConfig: a new run from the step-2 weights, with (or, the control, without) the optimizer
RESTORES = [("bf16 DP2", 2, {**HALF[0][1], "load_optim_state": True}),
            ("fp16 DP2 distopt", 1, {**HALF[1][1], "dist_opt": True, "load_optim_state": True}),
            ("bf16 DP2", 2, {**HALF[0][1], "load_optim_state": False})]


def load_name(saver: str, ranks: int, settings: dict) -> str:
    layout = "".join(f" {k}{settings[k]}" for k in ("tp", "pp") if settings.get(k, 1) > 1)
    weights_only = "" if settings.get("load_optimizer", True) else " weights only"
    restore = ""
    if "load_optim_state" in settings:
        restore = " restore" + (" +optimizer" if settings["load_optim_state"] else "")
    return f"{saver} -> {ranks}{layout}{weights_only}{restore}"


def half(settings: dict) -> bool:
    return settings.get("precision", "32") != "32"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("reshard")

    def run(name, settings, resume=None):
        return {"name": name, "steps": 4, "save_every": 2, "keep": 3,
                "run_dir": str(work / slug(name)), "losses": str(work / f"{slug(name)}.jsonl"),
                "resume": resume, "main_params_at_step": 2 if half(settings) else None,
                **settings}

    def checkpoint(saver):
        return str(work / slug(saver) / "checkpoints" / "step=2-consumed_samples=16")

    by_ranks: dict[int, list[dict]] = {1: [], 2: [], 4: []}
    for name, (ranks, settings) in {**SAVERS, **NOISE}.items():
        by_ranks[ranks].append(run(name, settings))
    for saver, ranks, settings in LOADS + WEIGHTS_ONLY:
        by_ranks[ranks].append(run(load_name(saver, ranks, settings), settings,
                                   resume=checkpoint(saver)))
    for saver, ranks, settings in RESTORES:
        by_ranks[ranks].append({**run(load_name(saver, ranks, settings), settings),
                                "restore": checkpoint(saver), "steps": 2})
    # savers before the runs that load them: 1 rank saves TP1 for the 4-rank load, and the
    # 1-rank loads need the 2- and 4-rank savers
    # keep-best-K by a metric: validate every step, keep the 2 *worst* val losses (mode max),
    # which keep-last-K would not
    by_ranks[1].append({**run("keep-worst-2", {}), "val_every": 1, "save_every": None,
                        "monitor": "val_loss", "mode": "max", "keep": 2})
    savers_1 = [r for r in by_ranks[1] if r["resume"] is None and not r.get("restore")]
    loads_1 = [r for r in by_ranks[1] if r["resume"] is not None or r.get("restore")]
    run_checkpointed(1, savers_1, work, "1a")
    run_checkpointed(2, by_ranks[2], work, "2")
    run_checkpointed(4, by_ranks[4], work, "4")
    run_checkpointed(1, loads_1, work, "1b")
    names = [*SAVERS, *NOISE, *(load_name(*load) for load in LOADS + WEIGHTS_ONLY + RESTORES)]
    out = {name: read_losses(work / f"{slug(name)}.jsonl") for name in names}
    out["main_params"] = {name: read_main_params(work / f"{slug(name)}.jsonl") for name in names}
    out["distcp_files"] = {name: len(list((work / slug(name) / "checkpoints").glob(
        "step=2-*/weights/*.distcp"))) for name in SAVERS}
    out["keep-worst-2"] = {"val": read_val_losses(work / "keep_worst_2.jsonl"),
                           "kept": sorted(p.name for p in (work / "keep_worst_2" / "checkpoints")
                                          .iterdir() if not p.is_symlink())}
    return out


def read_main_params(path) -> dict[int, dict[str, list[float]]]:
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return {r["step"]: r["main_params"] for r in records if "main_params" in r}


def fingerprint_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """Largest relative difference of any parameter's sum of squares (and sum, scaled alike)."""
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    return max(abs(a[k][i] - b[k][i]) / a[k][1] ** 0.5 if i == 0 else
               abs(a[k][1] - b[k][1]) / a[k][1] for k in a for i in (0, 1))


def moments_diff(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    """Largest relative difference of any parameter's sum of Adam's exp_avg_sq."""
    return max(abs(a[k][2] - b[k][2]) / abs(a[k][2]) for k in a if a[k][2])


def tp_rounding(results, settings) -> float:
    """Largest relative loss difference of a fresh TP2 run against the DP2 saver, steps 1-4."""
    label = "bf16" if settings["precision"] == "bf16-mixed" else "fp16"
    fresh, dp2 = results[f"{label} TP2 fresh"], results[f"{label} DP2"]
    return max(abs(fresh[k] - dp2[k]) / abs(dp2[k]) for k in (1, 2, 3, 4))


@pytest.mark.parametrize("saver,ranks,settings", LOADS, ids=[load_name(*load) for load in LOADS])
def test_resharded_resume_matches_the_saving_run(results, saver, ranks, settings):
    saved, loaded = results[saver], results[load_name(saver, ranks, settings)]
    assert sorted(saved) == [1, 2, 3, 4] and sorted(loaded) == [3, 4], (saved, loaded)
    saver_tp = SAVERS[saver][1].get("tp", 1)
    bound = 1e-6
    if half(settings) and settings.get("tp", 1) != saver_tp:
        bound = max(bound, 2 * tp_rounding(results, settings))
    for step in (3, 4):
        diff = abs(loaded[step] - saved[step]) / abs(saved[step])
        print(f"RESHARD {load_name(saver, ranks, settings)} step {step}: rel diff {diff:.2e} "
              f"(bound {bound:.1e})")
        assert diff <= bound, (step, loaded, saved)
    if half(settings):  # the fp32 main weights themselves came back, not re-derived
        main = results["main_params"]
        diff = fingerprint_diff(main[saver][2], main[load_name(saver, ranks, settings)][2])
        print(f"MAIN PARAMS {load_name(saver, ranks, settings)}: rel diff {diff:.2e}")
        assert diff <= 1e-12, diff


@pytest.mark.parametrize("saver,ranks,settings", WEIGHTS_ONLY,
                         ids=[load_name(*load) for load in WEIGHTS_ONLY])
def test_main_param_check_sees_weights_rederived_from_half_precision(results, saver, ranks,
                                                                      settings):
    """The control: a weights-only load re-derives the main weights from bf16/fp16 ones."""
    main = results["main_params"]
    diff = fingerprint_diff(main[saver][2], main[load_name(saver, ranks, settings)][2])
    print(f"MAIN PARAMS {load_name(saver, ranks, settings)}: rel diff {diff:.2e}")
    assert diff > 1e-6, diff


def test_keep_best_k_by_a_monitored_metric(results):
    run = results["keep-worst-2"]
    val = run["val"]
    assert sorted(val) == [1, 2, 3, 4], val
    worst = sorted(sorted(val, key=val.get)[-2:])
    assert sorted(int(re.search(r"step=(\d+)", name)[1]) for name in run["kept"]) == worst, run
    assert all("val_loss=" in name for name in run["kept"]), run["kept"]


@pytest.mark.parametrize("saver,ranks,settings", RESTORES, ids=[load_name(*r) for r in RESTORES])
def test_restore_takes_the_optimizer_state_when_asked(results, saver, ranks, settings):
    """RestoreConfig(load_optim_state=True): moments and fp32 main weights as saved at step 2;
    without it (the control) the moments start at zero and the main weights are re-derived."""
    main = results["main_params"]
    saved, restored = main[saver][2], main[load_name(saver, ranks, settings)][0]
    weights, moments = fingerprint_diff(saved, restored), moments_diff(saved, restored)
    print(f"RESTORE {load_name(saver, ranks, settings)}: main weights {weights:.2e}, "
          f"moments {moments:.2e}")
    if settings["load_optim_state"]:
        assert weights <= 1e-12 and moments <= 1e-12, (weights, moments)
    else:
        assert weights > 1e-6 and all(v[2] == 0 for v in restored.values()), weights
    assert sorted(results[load_name(saver, ranks, settings)]) == [1, 2]  # a new run: steps 1-2


def test_save_options_reach_megatrons_writer(results):
    """ckpt_torch_dist_multiproc=1: one file per writing rank (megatron's default writes 2)."""
    files = results["distcp_files"]
    assert files["TP2 distopt fully-reshardable"] == 2, files
    assert files["MoE EP2"] == 4, files  # 2 ranks, default thread count
