"""How fast the CLI starts, against the floor set by importing NeMo-Run, measured in one run.

Medians over N rounds (alternating the commands each round) of:
  python -c "import nemo_run"                       the reference: the floor for any NeMo-Run CLI
  python -c "import nemo_lite"                      (target < 0.3 s)
  nemo llm pretrain --help                          (target <= 1.3x the reference)
  nemo llm pretrain --factory tiny_gpt trainer.max_steps=1 -y
      wall time of the whole command: start, 2 CPU ranks, first optimizer step, checkpoint,
      exit; an upper bound on CLI-to-first-step (target <= 15 s on 2 cores)

    python benchmarks/startup.py [--rounds 5] [--train-rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def wall(cmd: list[str], cwd: str) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "NEMORUN_HOME": os.path.join(cwd, ".nemo_run"), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--train-rounds", type=int, default=2)
    args = parser.parse_args()
    python = sys.executable
    commands = {
        "import nemo_run": [python, "-c", "import nemo_run"],
        "import nemo_lite": [python, "-c", "import nemo_lite, nemo_lite.lightning, nemo_lite.llm"],
        "nemo llm pretrain --help": [str(BIN / "nemo"), "llm", "pretrain", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    train: list[float] = []
    with tempfile.TemporaryDirectory() as work:
        wall(commands["import nemo_run"], work)  # warm the file cache once
        for _ in range(args.rounds):
            for name, cmd in commands.items():
                times[name].append(wall(cmd, work))
        for i in range(args.train_rounds):
            run_dir = os.path.join(work, f"train{i}")
            os.makedirs(run_dir)
            train.append(wall([str(BIN / "nemo"), "llm", "pretrain", "--factory", "tiny_gpt",
                               "trainer.max_steps=1", "-y"], run_dir))
    median = {name: statistics.median(values) for name, values in times.items()}
    reference = median["import nemo_run"]
    for name, value in median.items():
        print(f"{name:<28} median {value:6.2f} s  ({value / reference:4.2f}x import nemo_run)")
    first_step = statistics.median(train)
    print(f"{'CLI to first step (bound)':<28} median {first_step:6.2f} s  "
          f"({first_step / reference:4.2f}x import nemo_run)")
    print(f"ratio --help / import nemo_run = {median['nemo llm pretrain --help'] / reference:.2f} "
          f"(target <= 1.3); import nemo_lite = {median['import nemo_lite']:.3f} s (target < 0.3); "
          f"first step <= {first_step:.1f} s (target <= 15)")


if __name__ == "__main__":
    main()
