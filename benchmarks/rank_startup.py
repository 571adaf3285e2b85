"""What two shims save in every rank, measured in one run (medians, alternating each round).

1. Importing Lightning through nemo_lite (`import nemo_lite.lightning.strategy` in a fresh
   process): with TORCHMETRICS_WITHOUT_TRANSFORMERS (nemo_lite imported first, as in a rank) vs
   without (Lightning imported first, so torchmetrics loads transformers' auto models).
2. megatron's checkpoint results queue (`Manager().Queue()`, then one put/get) in a process whose
   main module imports NeMo-Run at its top, as NeMo-Run's runner and the `nemo` script do: the
   spawn context (megatron-core 0.17's only way, 0.19's default) vs the fork context
   (CHECKPOINT_RESULTS_QUEUE_FORKED).

    python benchmarks/rank_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

IMPORT = """
import sys, time
start = time.perf_counter()
if sys.argv[1] == "without":
    import lightning.pytorch
import nemo_lite.lightning.strategy
print(time.perf_counter() - start, "transformers" in sys.modules)
"""
QUEUE = """
import sys, time
import nemo_run  # the main module's own imports, which a spawned child repeats
if __name__ == "__main__":
    import multiprocessing as mp
    start = time.perf_counter()
    queue = mp.get_context(sys.argv[1]).Manager().Queue()
    queue.put(1)
    queue.get()
    print(time.perf_counter() - start)
"""


def seconds(script: Path, arg: str) -> tuple[float, str]:
    proc = subprocess.run([sys.executable, str(script), arg], capture_output=True, text=True,
                          check=True)
    value, *rest = proc.stdout.split()
    return float(value), " ".join(rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases = {"import": ("with shim", "without"), "queue": ("fork", "spawn")}
    times: dict[str, list[float]] = {c: [] for pair in cases.values() for c in pair}
    with tempfile.TemporaryDirectory() as work:
        scripts = {"import": Path(work, "import_probe.py"), "queue": Path(work, "queue_probe.py")}
        scripts["import"].write_text(IMPORT)
        scripts["queue"].write_text(QUEUE)
        seconds(scripts["import"], "with shim")  # warm the file cache once
        for _ in range(args.rounds):
            for what, pair in cases.items():
                for case in pair:
                    value, transformers = seconds(scripts[what], case.split()[0])
                    times[case].append(value)
                    if what == "import":
                        assert transformers == ("False" if case == "with shim" else "True")
    median = {case: statistics.median(values) for case, values in times.items()}
    print(f"import nemo_lite.lightning.strategy: {median['with shim']:.2f} s with the shim, "
          f"{median['without']:.2f} s without ({median['without'] / median['with shim']:.2f}x); "
          f"saves {median['without'] - median['with shim']:.2f} s per process")
    print(f"checkpoint results queue: fork {median['fork']:.3f} s, spawn {median['spawn']:.2f} s "
          f"({median['spawn'] / median['fork']:.0f}x); saves "
          f"{median['spawn'] - median['fork']:.2f} s per rank at its first save")


if __name__ == "__main__":
    main()
