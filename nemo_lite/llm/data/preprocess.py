"""Text (jsonl or plain files) -> a Megatron indexed dataset (`<prefix>.bin` + `<prefix>.idx`).

What megatron's GPTDataset reads, written by megatron-core's own `IndexedDatasetBuilder`:
one sequence per document, the end-of-document id appended to each, in input order, in the
smallest dtype megatron picks for the vocabulary (`DType.optimal_dtype`: uint16 below 65,500
ids, else int32). Documents are parsed and tokenized in `workers` processes (a multiprocessing
Pool, `imap` keeps the order); this process reads, writes and counts. The files are written
under temporary names and renamed at the end, so a failed run never leaves a prefix that
`IndexedDataset.exists` would accept. A `<prefix>.meta.json` records the tokenizer and counts.

    nemo-lite data preprocess --input corpus.jsonl --output-prefix data/corpus \\
        --tokenizer tok/ --workers 2          (or `preprocess(...)` from Python)

Inputs: `.jsonl`/`.json` (one JSON object per line, text under `json_key`), anything else is
plain text (a whole file is one document, or each non-empty line with text_mode="line");
`.gz` is read transparently; a directory means every such file under it, in sorted order.
"""

import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

import numpy as np

from nemo_lite.llm.data.documents import (  # noqa: F401 - part of this module's API
    JSON_SUFFIXES,
    TEXT_MODES,
    TEXT_SUFFIXES,
    Document,
    InputNotFoundError,
    PreprocessError,
    is_json,
    iter_documents,
    parse_record,
    raw_records,
    resolve_inputs,
)
from nemo_lite.llm.data.indexed_inputs import indexed_dataset_module

# --- the worker side: module globals set once per process by `_init_worker` ---
_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer: Any, json_key: str, dtype: Any) -> None:
    _WORKER.update(tokenizer=tokenizer, json_key=json_key, dtype=np.dtype(dtype),
                   eod=tokenizer.eos_id)


def _encode(record: tuple[str, bytes, bool]) -> tuple[int, Optional[np.ndarray]]:
    """(input bytes, ids + eod) of one record; None for an empty document."""
    where, raw, as_json = record
    text = parse_record(where, raw, as_json, _WORKER["json_key"])
    if not text:
        return len(raw), None
    ids = _WORKER["tokenizer"].text_to_ids(text)
    out = np.empty(len(ids) + 1, dtype=_WORKER["dtype"])
    out[:-1] = ids
    out[-1] = _WORKER["eod"]
    return len(raw), out


@dataclass
class PreprocessSummary:
    output_prefix: str
    documents: int
    skipped_empty: int
    tokens: int
    input_bytes: int
    output_bytes: int
    seconds: float
    workers: int
    dtype: str
    tokenizer: str
    vocab_size: int
    eod_id: int
    unigram_entropy: float  # nats/token over the written stream, eod included
    # `seconds`: reading, tokenizing, writing (workers' start included, one-time imports not)

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else math.inf

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds if self.seconds > 0 else math.inf

    def __str__(self) -> str:
        return (f"wrote {self.output_prefix}.bin/.idx: {self.documents:,} documents "
                f"({self.skipped_empty:,} empty skipped), {self.tokens:,} tokens ({self.dtype}), "
                f"{self.input_bytes / 1e6:.2f} MB in {self.seconds:.2f} s with {self.workers} "
                f"worker(s): {self.docs_per_s:,.0f} docs/s, {self.mb_per_s:.2f} MB/s; "
                f"unigram entropy {self.unigram_entropy:.4f} nats/token")


class _Progress:
    """Periodic one-line progress on stderr (works in logs, unlike a redrawn bar)."""

    def __init__(self, interval: Optional[float]) -> None:
        self.interval = interval
        self.start = self.last = time.perf_counter()

    def update(self, documents: int, input_bytes: int, tokens: int) -> None:
        now = time.perf_counter()
        if self.interval is None or now - self.last < self.interval:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        print(f"preprocess: {documents:,} docs, {tokens:,} tokens, {input_bytes / 1e6:.1f} MB "
              f"in {elapsed:.1f} s ({documents / elapsed:,.0f} docs/s, "
              f"{input_bytes / 1e6 / elapsed:.2f} MB/s)", file=sys.stderr, flush=True)


class _Counts:
    """Token counts for the unigram entropy, batched (one bincount per ~1M tokens)."""

    def __init__(self, vocab_size: int) -> None:
        self.counts = np.zeros(vocab_size, dtype=np.int64)
        self.pending: list[np.ndarray] = []
        self.pending_tokens = 0

    def add(self, ids: np.ndarray) -> None:
        self.pending.append(ids)
        self.pending_tokens += ids.size
        if self.pending_tokens >= 1 << 20:
            self.flush()

    def flush(self) -> np.ndarray:
        if self.pending:
            batch = np.bincount(np.concatenate(self.pending).astype(np.int64),
                                minlength=self.counts.size)
            if batch.size > self.counts.size:
                self.counts = np.pad(self.counts, (0, batch.size - self.counts.size))
            self.counts += batch
            self.pending, self.pending_tokens = [], 0
        return self.counts


def output_dtype(vocab_size: int) -> Any:
    """megatron's choice for a vocabulary of `vocab_size` ids (the smallest its reader knows)."""
    return indexed_dataset_module().DType.optimal_dtype(vocab_size)


def preprocess(
    inputs: Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]],
    output_prefix: Union[str, os.PathLike],
    tokenizer: Any = "byte",
    json_key: str = "text",
    workers: int = 1,
    text_mode: str = "file",
    chunksize: int = 16,
    log_interval: Optional[float] = 5.0,
    start_method: Optional[str] = None,
) -> PreprocessSummary:
    """Tokenize `inputs` into `<output_prefix>.bin/.idx`; returns what was written and how fast.

    `tokenizer`: a tokenizer object or a spec for `get_tokenizer` ("byte", a path).
    `workers` > 1 tokenizes in that many processes (`start_method`: multiprocessing's, default
    "fork" where available, which starts workers without re-importing anything).
    """
    from nemo_lite.llm.data.corpus import entropy_from_counts
    from nemo_lite.llm.tokenizer import get_tokenizer

    if workers < 1:
        raise PreprocessError(f"workers must be >= 1, got {workers}")
    paths = resolve_inputs(inputs)
    records = raw_records(paths, text_mode)  # validates text_mode before anything is written
    tokenizer = get_tokenizer(tokenizer)
    prefix = os.fspath(output_prefix)
    if os.path.isdir(prefix) or prefix.endswith(os.sep):
        raise PreprocessError(f"--output-prefix {prefix} is a directory: give a file prefix "
                              f"such as {os.path.join(prefix, 'corpus')} (writes corpus.bin/.idx)")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    dtype = output_dtype(tokenizer.vocab_size)  # imports megatron (once): not timed
    start = time.perf_counter()
    tmp_bin, tmp_idx = f"{prefix}.bin.tmp{os.getpid()}", f"{prefix}.idx.tmp{os.getpid()}"
    pool = None
    try:
        if workers > 1:
            method = start_method or ("fork" if "fork" in multiprocessing.get_all_start_methods()
                                      else None)
            pool = multiprocessing.get_context(method).Pool(
                workers, initializer=_init_worker, initargs=(tokenizer, json_key, dtype))
            encoded = pool.imap(_encode, records, chunksize=chunksize)
        else:
            _init_worker(tokenizer, json_key, dtype)
            encoded = map(_encode, records)
        stats = _write(encoded, tmp_bin, tmp_idx, dtype, tokenizer.vocab_size, log_interval)
    except BaseException:
        for tmp in (tmp_bin, tmp_idx):
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    if stats["documents"] == 0:
        for tmp in (tmp_bin, tmp_idx):
            os.remove(tmp)
        raise PreprocessError(f"no documents in {', '.join(paths)}: the input is empty"
                              + (f" (key {json_key!r})" if any(map(is_json, paths)) else ""))
    os.replace(tmp_bin, f"{prefix}.bin")
    os.replace(tmp_idx, f"{prefix}.idx")
    summary = PreprocessSummary(
        output_prefix=prefix, documents=stats["documents"], skipped_empty=stats["skipped"],
        tokens=stats["tokens"], input_bytes=stats["input_bytes"],
        output_bytes=os.path.getsize(f"{prefix}.bin") + os.path.getsize(f"{prefix}.idx"),
        seconds=time.perf_counter() - start, workers=workers, dtype=np.dtype(dtype).name,
        tokenizer=repr(tokenizer), vocab_size=tokenizer.vocab_size, eod_id=tokenizer.eos_id,
        unigram_entropy=entropy_from_counts(stats["counts"]),
    )
    with open(f"{prefix}.meta.json", "w", encoding="utf-8") as f:
        json.dump({**asdict(summary), "inputs": paths, "json_key": json_key,
                   "text_mode": text_mode}, f, indent=2)
        f.write("\n")
    return summary


def _write(encoded: Iterable[tuple[int, Optional[np.ndarray]]], bin_path: str, idx_path: str,
           dtype: Any, vocab_size: int, log_interval: Optional[float]) -> dict[str, Any]:
    builder = indexed_dataset_module().IndexedDatasetBuilder(bin_path, dtype=dtype)
    progress, counts = _Progress(log_interval), _Counts(vocab_size)
    documents = skipped = tokens = input_bytes = 0
    try:
        for size, ids in encoded:
            input_bytes += size
            if ids is None:
                skipped += 1
                continue
            # add_document, not add_item: add_item wants a torch tensor (it calls .numpy()).
            builder.add_document(ids, [ids.size])
            counts.add(ids)
            documents += 1
            tokens += ids.size
            progress.update(documents, input_bytes, tokens)
    finally:
        builder.finalize(idx_path)  # closes the .bin even when a worker raised
    return {"documents": documents, "skipped": skipped, "tokens": tokens,
            "input_bytes": input_bytes, "counts": counts.flush()}
