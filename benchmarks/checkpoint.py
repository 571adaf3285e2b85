"""Checkpoint save and load speed on CPU, against the raw disk rate measured in the same run.

Trains a GPT model one step (so Adam state exists), then, inside the live run (1 CPU rank),
alternates for each round:

  (a) nemo_lite: `trainer.save_checkpoint(dir)` (megatron torch_dist, manifest with CRC32,
      fsync, atomic rename), then the resume path Lightning takes: `strategy.load_checkpoint`
      + `load_model_state_dict` + `load_optimizer_state_dict` (CRC32 verified);
  (b) the same with MegatronCheckpointIO(verify_checksums=False), to show the integrity check;
  (c) reference: `torch.save` of the same tensors (model state_dict + optimizer state_dict)
      + fsync, and `torch.load` back;
  (d) reference: `dd if=/dev/zero bs=4M conv=fsync` of as many bytes, and `dd` read back.

Before every load the files' pages are dropped from the page cache (posix_fadvise DONTNEED
after fsync), so loads read from the disk, not from memory. Bytes are the files written
(whole checkpoint directory for a/b); MB = 10^6 bytes. Prints medians, MB/s and ratios.

    python benchmarks/checkpoint.py [--rounds 5] [--hidden 768] [--layers 4] [--vocab 16384]
                                    [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

MB = 1e6


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def drop_cache(path: Path) -> None:
    """Evict `path`'s (clean, fsynced) pages from the page cache: the next read hits the disk."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def filesystem(path: Path) -> str:
    """'device fstype mountpoint' of the mount holding `path`."""
    best = ("?", "?", "/")
    target = str(path.resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            dev, mnt, fstype = line.split()[:3]
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[2]):
                best = (dev, fstype, mnt)
    return " ".join(best)


class Timed:
    """Wraps a method on one instance and adds each call's wall time to a list."""

    def __init__(self, owner, name: str) -> None:
        self.calls: list[float] = []
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.append(time.perf_counter() - start)

        setattr(owner, name, wrapper)

    def take(self) -> float:
        total, self.calls = sum(self.calls), []
        return total


def bench(trainer, args, root: Path, results: dict[str, list[float]]) -> None:
    """Runs on rank 0 of the live run (process group and megatron state still up)."""
    import torch

    from nemo_lite.lightning.checkpoint_io import WEIGHTS_DIR, _file_table, unwrap

    strategy = trainer.strategy
    io = strategy.checkpoint_io
    inspect, commit = Timed(io, "inspect"), Timed(io, "_commit")

    def nemo_round(tag: str, verify: bool, n: int) -> None:
        io.verify_checksums = verify
        path = root / f"{tag}-{n}"
        start = time.perf_counter()
        trainer.save_checkpoint(path)
        results[f"{tag}.save"].append(time.perf_counter() - start)
        results[f"{tag}.save.commit"].append(commit.take())
        results[f"{tag}.bytes"].append(tree_bytes(path))
        if n == 0:
            results["files"] = [len([p for p in (path / WEIGHTS_DIR).rglob("*") if p.is_file()])]
        drop_cache(path)
        start = time.perf_counter()
        checkpoint = strategy.load_checkpoint(path)
        strategy.load_model_state_dict(checkpoint)
        strategy.load_optimizer_state_dict(checkpoint)
        results[f"{tag}.load"].append(time.perf_counter() - start)
        results[f"{tag}.load.inspect"].append(inspect.take())
        if verify:  # one CRC32 pass over the checkpoint's files, from the page cache
            start = time.perf_counter()
            _file_table(path / WEIGHTS_DIR, True)
            results["crc_pass"].append(time.perf_counter() - start)
        del checkpoint
        shutil.rmtree(path)

    def torch_round(n: int) -> None:
        state = {"model": [unwrap(c).state_dict() for c in strategy.megatron_parallel],
                 "optimizer": strategy.optimizers[0].state_dict()}
        path = root / f"plain-{n}.pt"
        start = time.perf_counter()
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        results["torch.save"].append(time.perf_counter() - start)
        results["torch.bytes"].append(tree_bytes(path))
        del state
        drop_cache(path)
        start = time.perf_counter()
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        results["torch.load"].append(time.perf_counter() - start)
        del loaded
        path.unlink()

    def dd_round(n: int, nbytes: int) -> None:
        path = root / f"dd-{n}.bin"
        count = max(1, round(nbytes / (4 << 20)))
        start = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={count}",
                        "conv=fsync"], check=True, capture_output=True)
        results["dd.write"].append(time.perf_counter() - start)
        results["dd.bytes"].append(tree_bytes(path))
        drop_cache(path)
        start = time.perf_counter()
        subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=4M"], check=True,
                       capture_output=True)
        results["dd.read"].append(time.perf_counter() - start)
        path.unlink()

    nemo_round("warmup", True, 0)  # first save starts megatron's writer machinery
    for key in [k for k in results if k.startswith("warmup")]:
        del results[key]
    inspect.take(), commit.take()
    for n in range(args.rounds):
        nemo_round("nemo", True, n)
        nemo_round("nocrc", False, n)
        torch_round(n)
        dd_round(n, results["nemo.bytes"][-1])
    io.verify_checksums = True


def run(args, root: Path) -> dict[str, list[float]]:
    from collections import defaultdict

    import lightning.pytorch as pl
    from megatron.core.optimizer import OptimizerConfig

    from nemo_lite import lightning as nl
    from nemo_lite import llm

    results: dict[str, list[float]] = defaultdict(list)

    class Bench(pl.Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            bench(trainer, args, root, results)

    config = llm.GPTConfig(num_layers=args.layers, hidden_size=args.hidden,
                           num_attention_heads=args.hidden // 64, seq_length=args.seq,
                           vocab_size=args.vocab, hidden_dropout=0.0, attention_dropout=0.0)
    optim = nl.MegatronOptimizerModule(OptimizerConfig(lr=1e-4, optimizer="adam", clip_grad=1.0))
    data = llm.MockDataModule(seq_length=args.seq, global_batch_size=2, micro_batch_size=2)
    trainer = nl.Trainer(strategy=nl.MegatronStrategy(), devices=1, accelerator="cpu",
                         max_steps=1, limit_val_batches=0, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Bench()],
                         plugins=nl.MegatronMixedPrecision("32"))
    model = llm.GPTModel(config, optim=optim)
    trainer.fit(model, data)
    results["params"] = [sum(p.numel() for chunk in model.module for p in chunk.parameters())]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--dir", default="/tmp", help="where checkpoints are written")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="nemo_lite_ckpt_bench_", dir=args.dir))
    try:
        r = run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in r.items()}

    def rate(seconds_key: str, bytes_key: str) -> str:
        s, b = med[seconds_key], med[bytes_key]
        lo, hi = min(r[seconds_key]), max(r[seconds_key])
        return f"{b / MB:4.0f} MB in {s:5.2f} s [{lo:.2f}-{hi:.2f}] = {b / MB / s:5.0f} MB/s"

    def mbps(seconds_key: str, bytes_key: str) -> float:
        return med[bytes_key] / MB / med[seconds_key]

    print(f"model: GPT {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, "
          f"{med['params'] / 1e6:.1f}M params fp32 + Adam, 1 CPU rank; "
          f"{args.rounds} rounds, medians [min-max]")
    print(f"filesystem: {filesystem(root.parent)} ({args.dir}); page cache dropped before "
          f"each load; checkpoint = {int(med['files'])} files in weights/ + manifest + context")
    print(f"nemo_lite save          {rate('nemo.save', 'nemo.bytes')}"
          f"  (commit: CRC32 + fsync + manifest {med['nemo.save.commit']:.2f} s)")
    print(f"nemo_lite save, no CRC  {rate('nocrc.save', 'nocrc.bytes')}")
    print(f"torch.save + fsync      {rate('torch.save', 'torch.bytes')}")
    print(f"dd write conv=fsync     {rate('dd.write', 'dd.bytes')}")
    print(f"nemo_lite load          {rate('nemo.load', 'nemo.bytes')}"
          f"  (inspect incl. CRC32 verify: {med['nemo.load.inspect']:.2f} s)")
    print(f"nemo_lite load, no CRC  {rate('nocrc.load', 'nocrc.bytes')}"
          f"  (inspect: {med['nocrc.load.inspect']:.2f} s)")
    print(f"torch.load              {rate('torch.load', 'torch.bytes')}")
    print(f"dd read                 {rate('dd.read', 'dd.bytes')}")
    print(f"one CRC32 pass over the checkpoint (page cache): {med['crc_pass']:.2f} s "
          f"= {med['nemo.bytes'] / MB / med['crc_pass']:.0f} MB/s")
    print(f"ratio save MB/s  nemo_lite / torch.save = "
          f"{mbps('nemo.save', 'nemo.bytes') / mbps('torch.save', 'torch.bytes'):.2f}   "
          f"/ dd = {mbps('nemo.save', 'nemo.bytes') / mbps('dd.write', 'dd.bytes'):.2f}   "
          f"(no CRC / torch.save = "
          f"{mbps('nocrc.save', 'nocrc.bytes') / mbps('torch.save', 'torch.bytes'):.2f})")
    print(f"ratio load MB/s  nemo_lite / torch.load = "
          f"{mbps('nemo.load', 'nemo.bytes') / mbps('torch.load', 'torch.bytes'):.2f}   "
          f"/ dd = {mbps('nemo.load', 'nemo.bytes') / mbps('dd.read', 'dd.bytes'):.2f}   "
          f"(no CRC / torch.load = "
          f"{mbps('nocrc.load', 'nocrc.bytes') / mbps('torch.load', 'torch.bytes'):.2f})")


if __name__ == "__main__":
    main()
