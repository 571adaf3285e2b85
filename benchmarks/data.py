"""Data-pipeline throughput on the offline stdlib corpus, measured in one run.

Sections (all by default; `--only NAME ...` picks some):
  preprocess   corpus jsonl -> megatron .bin/.idx (nemo_lite.llm.data.preprocess) with the
               byte tokenizer and a byte-level BPE trained here, 1 and 2 workers: median over
               --rounds (orders alternate), MB/s and documents/s of input, ratio to 1 worker.
               Timed: reading, tokenizing, writing, worker start (not the one-time imports).
               "CPU s" (this process + its workers) shows the work done whatever the load.

A section is `def section(args, workdir) -> None` registered in SECTIONS; it reuses the
corpus and tokenizer that `prepare` builds once into `workdir`.

    python benchmarks/data.py [--only preprocess] [--rounds 3] [--max-mb 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prepare(args: argparse.Namespace, workdir: Path) -> dict:
    """The corpus and a trained tokenizer, built once for every section."""
    from nemo_lite.llm.data.corpus import build_stdlib_corpus
    from nemo_lite.llm.tokenizer import train_bpe_tokenizer

    corpus = build_stdlib_corpus(workdir / "stdlib.jsonl", max_bytes=int(args.max_mb * 1e6))
    print(corpus)
    start = time.perf_counter()
    bpe = train_bpe_tokenizer(corpus.path, args.vocab_size, str(workdir / "bpe"))
    print(f"byte-level BPE, vocab {bpe.vocab_size:,}, trained in "
          f"{time.perf_counter() - start:.1f} s")
    return {"corpus": corpus, "tokenizers": {"byte": "byte", f"bpe-{bpe.vocab_size}": bpe}}


def cpu_seconds() -> float:
    """User + system time of this process and its reaped children (the pool's workers)."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def preprocess_section(args: argparse.Namespace, workdir: Path, prepared: dict) -> None:
    from nemo_lite.llm.data.preprocess import indexed_dataset_module, preprocess

    indexed_dataset_module()  # the one-time megatron import, outside every timing
    corpus = prepared["corpus"]
    rows = []
    for name, tokenizer in prepared["tokenizers"].items():
        runs: dict[int, list] = {w: [] for w in args.workers}
        for r in range(args.rounds):
            order = args.workers if r % 2 == 0 else list(reversed(args.workers))
            for workers in order:
                cpu = cpu_seconds()
                summary = preprocess(corpus.path, workdir / f"{name}-w{workers}" / "data",
                                     tokenizer=tokenizer, workers=workers, log_interval=None)
                runs[workers].append((summary, cpu_seconds() - cpu))
        base = statistics.median(s.seconds for s, _ in runs[args.workers[0]])
        for workers, done in runs.items():
            seconds = statistics.median(s.seconds for s, _ in done)
            cpu = statistics.median(c for _, c in done)
            s = done[0][0]
            rows.append((name, workers, seconds, cpu, s.documents / seconds,
                         s.input_bytes / 1e6 / seconds, s.tokens / seconds / 1e6,
                         base / seconds, s.unigram_entropy))
    header = ("tokenizer", "workers", "median s", "CPU s", "docs/s", "MB/s", "Mtok/s",
              f"speed-up vs {args.workers[0]}", "unigram H (nats/tok)")
    print(f"\npreprocess (median of {args.rounds} rounds; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at the end)")
    print(" | ".join(header))
    for name, workers, seconds, cpu, dps, mbps, mtps, ratio, entropy in rows:
        print(f"{name} | {workers} | {seconds:.2f} | {cpu:.2f} | {dps:,.0f} | {mbps:.2f} | "
              f"{mtps:.2f} | {ratio:.2f}x | {entropy:.3f}")


SECTIONS: dict[str, Callable[[argparse.Namespace, Path, dict], None]] = {
    "preprocess": preprocess_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-mb", type=float, default=8.0, help="corpus size cap")
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepared = prepare(args, workdir)
        for name in args.only:
            SECTIONS[name](args, workdir, prepared)


if __name__ == "__main__":
    main()
