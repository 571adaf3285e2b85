"""Broken checkpoints must fail with a clear error, run no code, and leave the good one usable.

Usage: torchrun --nproc-per-node 1 ckpt_errors.py WORKDIR OUT.json
Trains 2 steps (checkpoint at step 2), breaks copies of that checkpoint in several ways, tries to
resume each copy through the normal API, and records the error type and message per case.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from ckpt_run import LossLog, train

from nemo_lite.lightning import rng


class Payload:
    """Unpickling this runs a shell command: a checkpoint must never do that."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def base_run(work: Path, name: str, **extra) -> dict:
    return {"name": name, "steps": 2, "save_every": 2, "run_dir": str(work / name),
            "losses": str(work / f"{name}.jsonl"), **extra}


def checkpoint_of(run_dir: Path) -> Path:
    return next(p for p in (run_dir / "checkpoints").iterdir()
                if p.name.startswith("step=2") and not p.is_symlink())


def attempt(run: dict) -> dict:
    try:
        train(run)
    except Exception as error:  # noqa: BLE001 - recording what the user would see
        return {"error": type(error).__name__, "message": str(error)}
    return {"error": None}


def read_losses(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, path.read_text().splitlines())}


def from_context(checkpoint: Path, work: Path) -> dict:
    import fiddle as fdl

    from nemo_lite.io import load_context

    config = load_context(checkpoint, build=False)
    config["trainer"].max_steps = 3
    built = fdl.build(config)
    losses = work / "from-context.jsonl"
    built["trainer"].callbacks.append(LossLog(str(losses)))
    built["trainer"].fit(built["model"], built["data"], ckpt_path=str(checkpoint))
    return {"losses": read_losses(losses), "model": type(built["model"]).__name__,
            "hidden_size": built["model"].config.hidden_size}


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    train(base_run(work, "good"))
    good = checkpoint_of(work / "good")
    broken = work / "broken"
    broken.mkdir()

    def copy(name: str) -> Path:
        target = broken / name
        shutil.copytree(good, target)
        return target

    cases = {}
    cases["missing"] = broken / "does-not-exist"
    incomplete = copy("x")
    cases["incomplete"] = incomplete.rename(broken / "step=2-consumed_samples=16.incomplete")
    no_manifest = copy("no-manifest")
    (no_manifest / "nemo_lite.json").unlink()
    cases["no_manifest"] = no_manifest
    truncated = copy("truncated")
    shard = sorted((truncated / "weights").glob("*.distcp"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    cases["truncated"] = truncated
    flipped = copy("flipped")
    shard = sorted((flipped / "weights").glob("*.distcp"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    cases["corrupt"] = flipped

    results = {}
    for name, path in cases.items():
        results[name] = {"path": str(path), **attempt({**base_run(work, f"try-{name}"),
                                                      "steps": 3, "resume": str(path)})}
    # a checkpoint saved with a different hidden size cannot fit this model
    results["shape"] = {"path": str(good), **attempt(
        {**base_run(work, "try-shape"), "steps": 3, "hidden": 32, "resume": str(good)})}

    # a different vocabulary (259 ids) padded to the same 512 rows: not a silent partial load
    results["vocab"] = {"path": str(good), **attempt(
        {**base_run(work, "try-vocab"), "steps": 3, "vocab": 259, "resume": str(good)})}

    # a checkpoint holding a pickled object that would run a command when unpickled
    marker = work / "payload-ran"
    capture = rng.capture
    rng.capture = lambda: {"payload": Payload(str(marker))}
    try:
        train(base_run(work, "evil"))
    finally:
        rng.capture = capture
    evil = checkpoint_of(work / "evil")
    results["pickle_payload"] = {"path": str(evil), **attempt(
        {**base_run(work, "try-evil"), "steps": 3, "resume": str(evil)})}
    results["pickle_payload"]["marker_exists"] = marker.exists()

    # after all that, the good checkpoint still resumes
    results["good_after"] = attempt({**base_run(work, "try-good"), "steps": 3,
                                     "resume": str(good)})
    results["good_after"]["losses"] = read_losses(work / "try-good.jsonl")

    # the checkpoint directory alone rebuilds the run: trainer, model and data from its
    # context/, weights and state from weights/ (one more step than it was saved with)
    results["from_context"] = from_context(good, work)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
