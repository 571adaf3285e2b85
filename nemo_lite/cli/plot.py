"""`nemo-lite plot RUN_DIR`: the training and validation loss curves of a run as a PNG.

Reads the TensorBoard event files NeMoLogger writes under RUN_DIR (every version and resumed
segment: a later point of the same step wins), so it works on a finished, running or
interrupted run, with no TensorBoard server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TRAIN_TAG = "reduced_train_loss"
VAL_TAG = "val_loss"
#: Lightning logs the values of the Nth update, and the validation that follows it, at step
#: N-1 (updates counted before this one): shifted to read "after N updates", as the printed
#: progress does ("step N/...", "validation at step N").
STEP_OFFSET = {TRAIN_TAG: 1, VAL_TAG: 1}


class PlotError(ValueError):
    pass


def read_scalars(run_dir: str | Path, tags: tuple[str, ...] = (TRAIN_TAG, VAL_TAG)
                 ) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} sorted by step, from every event file under `run_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir} is not a directory: give the run directory "
                        "(e.g. nemo_experiments/NAME or LOG_DIR/NAME).")
    files = sorted(run_dir.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise PlotError(f"no TensorBoard event files under {run_dir}: was the run started with "
                        "NeMoLogger(tensorboard=True) (the default), and has it logged a step?")
    points: dict[str, dict[int, tuple[float, float]]] = {tag: {} for tag in tags}
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        available = set(events.Tags().get("scalars", []))
        for tag in tags:
            if tag in available:
                for event in events.Scalars(tag):
                    seen = points[tag].get(event.step)
                    if seen is None or event.wall_time >= seen[0]:
                        points[tag][event.step] = (event.wall_time, event.value)
    return {tag: sorted((step + STEP_OFFSET.get(tag, 0), value)
                        for step, (_, value) in by_step.items())
            for tag, by_step in points.items()}


def plot_run(run_dir: str | Path, output: str | Path | None = None, width: float = 8.0,
             height: float = 5.0, dpi: int = 100, baseline: float | None = None):
    """Write the PNG (default RUN_DIR/loss.png); returns (path, matplotlib Figure).
    `baseline`: a horizontal reference line (e.g. the corpus' unigram entropy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(run_dir)
    if not scalars[TRAIN_TAG] and not scalars[VAL_TAG]:
        raise PlotError(f"the event files under {run_dir} hold no '{TRAIN_TAG}' or "
                        f"'{VAL_TAG}' values yet.")
    figure, axes = plt.subplots(figsize=(width, height), dpi=dpi)
    for tag, label, style in ((TRAIN_TAG, "train loss", "-"), (VAL_TAG, "validation loss", "o-")):
        if scalars[tag]:
            steps, values = zip(*scalars[tag], strict=True)
            axes.plot(steps, values, style, label=label, markersize=4)
    if baseline is not None:
        axes.axhline(baseline, color="gray", linestyle="--", label=f"baseline {baseline:.3f}")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    where = Path(run_dir).resolve()
    axes.set_title(where.name if where.name[:1].isalpha() else f"{where.parent.name}/{where.name}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(output) if output else Path(run_dir) / "loss.png"
    figure.savefig(path)
    plt.close(figure)
    return path, figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nemo-lite plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a run directory (holds tb_logs/ or its versions)")
    parser.add_argument("-o", "--output", help="PNG path (default RUN_DIR/loss.png)")
    parser.add_argument("--width", type=float, default=8.0, help="inches (default 8)")
    parser.add_argument("--height", type=float, default=5.0, help="inches (default 5)")
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument("--baseline", type=float, help="draw a reference loss (e.g. unigram entropy)")
    args = parser.parse_args(argv)
    try:
        path, _ = plot_run(args.run_dir, args.output, args.width, args.height, args.dpi,
                           args.baseline)
    except PlotError as error:
        print(f"error: {error}", file=__import__("sys").stderr)
        return 2
    scalars = read_scalars(args.run_dir)
    train, val = scalars[TRAIN_TAG], scalars[VAL_TAG]
    summary = [f"wrote {path}"]
    if train:
        summary.append(f"train loss {train[0][1]:.4f} (step {train[0][0]}) -> {train[-1][1]:.4f} "
                       f"(step {train[-1][0]})")
    if val:
        summary.append(f"validation loss {val[-1][1]:.4f} (step {val[-1][0]})")
    print("; ".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
