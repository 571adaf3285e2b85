"""Data-pipeline throughput on the offline stdlib corpus, measured in one run.

Sections (all by default; `--only NAME ...` picks some):
  preprocess   corpus jsonl -> megatron .bin/.idx (nemo_lite.llm.data.preprocess) with the
               byte tokenizer and a byte-level BPE trained here, 1 and 2 workers: median over
               --rounds (orders alternate), MB/s and documents/s of input, ratio to 1 worker.
               Timed: reading, tokenizing, writing, worker start (not the one-time imports).
               "CPU s" (this process + its workers) shows the work done whatever the load.
  loader       PreTrainingDataModule's training loader (megatron GPTDataset, Megatron's batch
               sampler; seq 128, micro-batch 4, global batch 16, BPE) drained with 0 and 2
               loader workers: samples/s, against the samples/s one training step of the
               stdlib example's model (examples/pretrain_stdlib.py: 4 layers, hidden 128,
               1 CPU rank) consumes, measured by training it here on the same data.

A section is `def section(args, workdir) -> None` registered in SECTIONS; it reuses the
corpus and tokenizer that `prepare` builds once into `workdir`.

    python benchmarks/data.py [--only preprocess loader] [--rounds 3] [--max-mb 8]
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


def _bpe(prepared: dict):
    return next(t for n, t in prepared["tokenizers"].items() if n.startswith("bpe"))


def loader_section(args: argparse.Namespace, workdir: Path, prepared: dict) -> None:
    import fiddle as fdl
    import nemo_run as run

    from nemo_lite.cli.plot import read_scalars
    from nemo_lite.llm.data.preprocess import preprocess
    from nemo_lite.llm.data.pretraining import PreTrainingDataModule
    from recipes import tiny_gpt

    seq, micro, batch, steps = 128, 4, 16, args.loader_steps
    tokenizer = _bpe(prepared)
    prefix = workdir / "loader" / "data"
    preprocess(prepared["corpus"].path, prefix, tokenizer=tokenizer, workers=1, log_interval=None)
    rows = []
    for workers in (0, 2):
        data = PreTrainingDataModule(str(prefix), seq_length=seq, tokenizer=tokenizer,
                                     micro_batch_size=micro, global_batch_size=batch,
                                     num_workers=workers, split="98,2,0",
                                     index_mapping_dir=str(workdir / "loader" / "cache"))
        data.build(steps)
        start, samples = time.perf_counter(), 0
        for item in data.train_dataloader():
            samples += item["tokens"].shape[0]
        seconds = time.perf_counter() - start
        rows.append((f"loader, {workers} workers", samples / seconds, samples, seconds))

    recipe = tiny_gpt.pretrain_recipe(name="bench", dir=str(workdir / "runs"), devices=1)
    config = recipe.model.config
    config.seq_length, config.hidden_size = seq, 128
    recipe.trainer.strategy.tensor_model_parallel_size = 1
    recipe.trainer.max_steps = args.train_steps
    recipe.resume.resume_if_exists = False
    recipe.log.ckpt.every_n_train_steps = 10**6
    recipe.data = run.Config(PreTrainingDataModule, paths=str(prefix), seq_length=seq,
                             tokenizer=tokenizer, micro_batch_size=micro, global_batch_size=batch,
                             split="98,2,0", index_mapping_dir=str(workdir / "loader" / "cache"))
    run_dir = fdl.build(recipe)()
    times = [t for step, t in read_scalars(run_dir, ("step_time",))["step_time"] if step > 2]
    step = statistics.median(times)
    train = batch / step
    print(f"\nloader vs training (seq {seq}, micro-batch {micro}, global batch {batch}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print("what | samples/s | samples | seconds | x the training step's need")
    for name, rate, samples, seconds in rows:
        print(f"{name} | {rate:,.0f} | {samples} | {seconds:.2f} | {rate / train:,.0f}x")
    print(f"training step (1 CPU rank, median of {len(times)} steps: {step * 1000:.0f} ms) | "
          f"{train:,.1f} | | | 1x")


SECTIONS: dict[str, Callable[[argparse.Namespace, Path, dict], None]] = {
    "preprocess": preprocess_section,
    "loader": loader_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-mb", type=float, default=8.0, help="corpus size cap")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--loader-steps", type=int, default=100,
                        help="training steps the loader is built for (megatron builds whole "
                             "epochs of samples: the loader drains them all)")
    parser.add_argument("--train-steps", type=int, default=12, help="training steps timed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        prepared = prepare(args, workdir)
        for name in args.only:
            SECTIONS[name](args, workdir, prepared)


if __name__ == "__main__":
    main()
