"""Tiny local data for tests: an indexed dataset, a BPE tokenizer, a SentencePiece model and an
SFT directory, each written once under `work` (nothing is downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

TEXTS = [f"def function_{i}(x):\n    return x * {i} + {i % 7}\n" for i in range(200)]


def tiny_indexed(work: Path) -> Path:
    """A megatron .bin/.idx prefix of 50 documents of byte tokens."""
    prefix = work / "indexed" / "docs"
    if not Path(f"{prefix}.idx").exists():
        import torch
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        prefix.parent.mkdir(parents=True, exist_ok=True)
        builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=__import__("numpy").int32)
        for text in TEXTS[:50]:
            ids = list(text.encode()) + [256]
            builder.add_document(torch.tensor(ids), [len(ids)])
        builder.finalize(f"{prefix}.idx")
    return prefix


def _corpus(work: Path) -> Path:
    path = work / "corpus.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    return path


def bpe_tokenizer_dir(work: Path, vocab_size: int = 300) -> Path:
    out = work / "bpe"
    if not (out / "tokenizer.json").exists():
        from nemo_lite.llm.tokenizer import train_bpe_tokenizer

        train_bpe_tokenizer(str(_corpus(work)), vocab_size, str(out))
    return out


def sentencepiece_model(work: Path) -> Path:
    model = work / "sp.model"
    if not model.exists():
        import sentencepiece as spm

        lines = [line for text in TEXTS for line in text.splitlines() if line.strip()]
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(work / "sp"), vocab_size=320,
            model_type="bpe", byte_fallback=True, character_coverage=1.0, pad_id=3,
            minloglevel=2, num_threads=1)
    return model


def sft_dir(work: Path) -> Path:
    root = work / "sft"
    if not (root / "training.jsonl").exists():
        root.mkdir(parents=True, exist_ok=True)
        rows = [{"input": f"double {i}?", "output": str(2 * i)} for i in range(40)]
        for name in ("training.jsonl", "validation.jsonl"):
            (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
