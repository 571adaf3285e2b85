"""What preemption handling and the rank watchdog cost per training step, measured in one run.

2 ranks (torchrun, DP2, gloo), the same model and data, alternating rounds: (a) nl.Trainer's
defaults (PreemptionCallback: one gloo all-reduce of a flag after each step; RankWatchdog: a
heartbeat thread, two attribute writes per step) and (b) `resilience=False` (neither). Each
step is timed as the wall time between consecutive step ends; prints both medians and their
ratio (target <= 1.01), and the per-step flag all-reduce timed alone (500 calls) as a share
of a step: two ranks on two cores make the ratio noisier than the effect.

    python benchmarks/resilience_overhead.py [--steps 40] [--rounds 3] [--hidden 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def steps(args, resilience: bool) -> list[float]:
    import lightning.pytorch as pl
    from megatron.core.optimizer import OptimizerConfig

    from nemo_lite import lightning as nl
    from nemo_lite import llm

    ends: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_end(self, *a, **k):
            ends.append(time.perf_counter())

    config = llm.GPTConfig(num_layers=args.layers, hidden_size=args.hidden,
                           num_attention_heads=args.hidden // 64, seq_length=args.seq,
                           vocab_size=512, hidden_dropout=0.0, attention_dropout=0.0)
    trainer = nl.Trainer(strategy=nl.MegatronStrategy(), devices=2, accelerator="cpu",
                         max_steps=args.steps, limit_val_batches=0, enable_progress_bar=False,
                         callbacks=[Clock()], resilience=resilience,
                         plugins=nl.MegatronMixedPrecision("32"))
    model = llm.GPTModel(config, optim=nl.MegatronOptimizerModule(OptimizerConfig(lr=1e-3)))
    trainer.fit(model, llm.MockDataModule(seq_length=args.seq, global_batch_size=8,
                                          micro_batch_size=2))
    return [b - a for a, b in zip(ends, ends[1:], strict=False)][args.warmup:]


def flag_all_reduce_seconds(count: int = 500) -> float:
    """Mean time of PreemptionCallback's per-step agreement (a 1-int MAX all-reduce, gloo)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():  # training left its group in place: it is used
        dist.init_process_group("gloo")
    flag = torch.zeros(1, dtype=torch.int32)
    for _ in range(20):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    start = time.perf_counter()
    for _ in range(count):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        int(flag.item())
    return (time.perf_counter() - start) / count


def worker(args) -> None:
    import torch.distributed as dist

    on: list[float] = []
    off: list[float] = []
    for _ in range(args.rounds):
        on += steps(args, True)
        off += steps(args, False)
    flag = flag_all_reduce_seconds()
    if not dist.is_initialized() or dist.get_rank() == 0:
        a, b = statistics.median(on), statistics.median(off)
        print(f"model: {args.layers} layers, hidden {args.hidden}, seq {args.seq}; 2 ranks (DP2, "
              f"gloo); {args.rounds} rounds x {args.steps} steps, {args.warmup} warm-up dropped")
        print(f"with preemption + watchdog  median step {a * 1000:8.2f} ms  ({len(on)} steps)")
        print(f"resilience=False            median step {b * 1000:8.2f} ms  ({len(off)} steps)")
        print(f"ratio = {a / b:.3f}  (target <= 1.01; both ranks share 2 cores: noisy)")
        print(f"the per-step flag all-reduce alone: {flag * 1e6:.0f} us = "
              f"{100 * flag / b:.2f}% of a step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--standalone", __file__, "--worker", *sys.argv[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    sys.exit(subprocess.run(command, env=env).returncode)


if __name__ == "__main__":
    main()
