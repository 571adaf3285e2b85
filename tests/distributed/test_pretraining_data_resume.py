"""A tiny GPT trains on indexed datasets (a 30/70 blend) with DP2 on two CPU ranks; a run
stopped after step 3 and resumed from its checkpoint draws exactly the samples, and gets
exactly the losses (training and validation), of an uninterrupted run.

One torchrun launch runs the reference (6 steps), the interrupted run (stops after its step-3
checkpoint) and the same run again (resumes from that checkpoint).
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._support.ranks import torchrun

pytestmark = pytest.mark.distributed

STEPS, STOP, GBS = 6, 3, 8


def write(prefix: Path, seed: int) -> str:
    """Byte-token documents (arithmetic progressions, so a model can learn them) + EOD 256."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for _ in range(120):
        n, start = int(rng.integers(20, 80)), int(rng.integers(256))
        stride = int(rng.integers(1, 8))
        doc = [(start + stride * i) % 256 for i in range(n)] + [256]
        builder.add_document(torch.tensor(doc), [len(doc)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def read(log: Path) -> dict:
    """rank -> step -> record (a step logged twice keeps the later record)."""
    out: dict = {}
    for path in sorted(log.parent.glob(f"{log.name}.rank*")):
        rank = int(path.name.rsplit("rank", 1)[1])
        records = [json.loads(line) for line in path.read_text().splitlines()]
        out[rank] = {r["step"]: r for r in records if "val_loss" not in r}
        if rank == 0:
            out["val"] = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("pretraining_data")
    paths = [0.3, write(work / "a", 1), 0.7, write(work / "b", 2)]
    common = {"steps": STEPS, "save_every": STOP, "val_every": STOP}
    spec = {"paths": paths, "cache": str(work / "cache"), "runs": [
        {**common, "name": "reference", "run_dir": str(work / "ref"),
         "log": str(work / "ref.jsonl")},
        {**common, "name": "stopped", "stop_after": STOP, "run_dir": str(work / "resumed"),
         "log": str(work / "stopped.jsonl")},
        {**common, "name": "resumed", "run_dir": str(work / "resumed"),
         "log": str(work / "resumed.jsonl")},
    ]}
    (work / "spec.json").write_text(json.dumps(spec))
    torchrun(2, "pretraining_data_run.py", str(work / "spec.json"))
    return work


def test_dp2_ranks_draw_disjoint_halves_of_each_global_batch(runs):
    reference = read(runs / "ref.jsonl")
    assert {0, 1} <= set(reference)
    for step in range(1, STEPS + 1):
        drawn = [[i for i, _ in reference[rank][step]["samples"]] for rank in (0, 1)]
        assert all(len(d) == GBS // 2 for d in drawn), drawn
        assert sorted(drawn[0] + drawn[1]) == list(range((step - 1) * GBS, step * GBS))
    losses = [reference[0][s]["loss"] for s in range(1, STEPS + 1)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses


def test_resumed_run_draws_the_same_samples_and_gets_the_same_losses(runs):
    reference, stopped, resumed = (read(runs / f"{n}.jsonl") for n in ("ref", "stopped", "resumed"))
    for rank in (0, 1):
        assert sorted(stopped[rank]) == list(range(1, STOP + 1))
        assert sorted(resumed[rank]) == list(range(STOP + 1, STEPS + 1))
        joined = {**stopped[rank], **resumed[rank]}
        for step in range(1, STEPS + 1):
            assert joined[step]["samples"] == reference[rank][step]["samples"], (rank, step)
    for step in range(1, STEPS + 1):
        expected = reference[0][step]["loss"]
        got = {**stopped[0], **resumed[0]}[step]["loss"]
        assert abs(got - expected) <= 1e-6 * abs(expected), (step, got, expected)
    # validation (every 3 steps, 2 global batches from the validation split) agrees as well
    assert sorted(reference["val"]) == [STOP, STEPS]
    assert {**stopped["val"], **resumed["val"]} == reference["val"]
    log = (runs / "resumed" / "nemo_log_globalrank-0_localrank-0.txt").read_text()
    consumed = STOP * GBS
    assert re.findall(r"resuming from checkpoint (\S+)", log)[-1].endswith(
        f"step={STOP}-consumed_samples={consumed}")


def test_index_caches_were_written_once_and_reused(runs):
    cache = runs / "cache"
    files = sorted(p.name for p in cache.iterdir())
    assert any(n.endswith("GPTDataset-train-shuffle_index.npy") for n in files), files
    assert any(n.endswith("BlendedDataset-train-dataset_index.npy") for n in files), files
    # The three runs build identical datasets: one set of cache files serves all of them.
    assert len([n for n in files if n.endswith("GPTDataset-train-description.txt")]) == 2
