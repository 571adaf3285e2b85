"""Text (jsonl or plain files) -> a Megatron indexed dataset (`<prefix>.bin` + `<prefix>.idx`).

What megatron's GPTDataset reads, written by megatron-core's own `IndexedDatasetBuilder`:
one sequence per document, the end-of-document id appended to each, in input order, in the
smallest dtype megatron picks for the vocabulary (`DType.optimal_dtype`: uint16 below 65,500
ids, else int32). Documents are parsed and tokenized in `workers` processes (a multiprocessing
Pool, `imap` keeps the order); this process reads, writes and counts. The files are written
under temporary names and renamed at the end, so a failed run never leaves a prefix that
`IndexedDataset.exists` would accept. A `<prefix>.meta.json` records the tokenizer and counts.

    python -m nemo_lite.llm.data.preprocess --input corpus.jsonl --output-prefix data/corpus \\
        --tokenizer tok/ --workers 2

Inputs: `.jsonl`/`.json` (one JSON object per line, text under `json_key`), anything else is
plain text (a whole file is one document, or each non-empty line with text_mode="line");
`.gz` is read transparently; a directory means every such file under it, in sorted order.
"""

import gzip
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Optional, Union

import numpy as np

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".text", ".md")
TEXT_MODES = ("file", "line")


class PreprocessError(ValueError):
    """Input that cannot be turned into a dataset; the message names the file:line and the fix."""


class InputNotFoundError(FileNotFoundError):
    """An input path that does not exist."""

    def __str__(self) -> str:  # one line, not FileNotFoundError's "[Errno ...]" form
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Document:
    text: str
    where: str  # "path:line" (jsonl, text lines) or "path" (a whole text file)


def resolve_inputs(inputs: Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]) -> list[str]:
    """Input files in order: files as given, directories expanded to their sorted data files."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(item)
                for name in names
                if name.endswith(JSON_SUFFIXES + TEXT_SUFFIXES)
            )
            if not found:
                raise PreprocessError(
                    f"directory {item} has no {', '.join(JSON_SUFFIXES + TEXT_SUFFIXES)} files"
                )
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise InputNotFoundError(f"input {item} does not exist: pass .jsonl/.txt files or "
                                     "directories (build a corpus with `nemo-lite data corpus`)")
    if not paths:
        raise PreprocessError("no input files given: pass --input FILE_OR_DIR")
    return paths


def is_json(path: str) -> bool:
    return path.endswith(JSON_SUFFIXES)


def _open(path: str) -> Any:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def raw_records(paths: list[str], text_mode: str = "file") -> Iterator[tuple[str, bytes, bool]]:
    """(where, raw bytes, is_json) per document candidate; parsing happens in `parse_record`."""
    if text_mode not in TEXT_MODES:
        raise PreprocessError(f"text_mode {text_mode!r} is unknown: use one of {TEXT_MODES}")

    def records() -> Iterator[tuple[str, bytes, bool]]:
        for path in paths:
            as_json = is_json(path)
            with _open(path) as f:
                if not as_json and text_mode == "file":
                    yield path, f.read(), False
                    continue
                for number, line in enumerate(f, 1):
                    if line.strip():
                        yield f"{path}:{number}", line if as_json else line.rstrip(b"\r\n"), as_json

    return records()


def parse_record(where: str, raw: bytes, as_json: bool, json_key: str) -> str:
    """The document's text; PreprocessError naming `where` for bad UTF-8/JSON or a missing key."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PreprocessError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start}): "
                              "re-encode the file as UTF-8") from None
    if not as_json:
        return text
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise PreprocessError(f"{where}: not valid JSON ({e.msg} at column {e.colno}): "
                              "fix or remove the line (jsonl: one JSON object per line)") from None
    if not isinstance(record, dict):
        raise PreprocessError(f"{where}: a JSON {type(record).__name__}, not an object: "
                              f"each line must be an object like {{\"{json_key}\": \"...\"}}")
    if json_key not in record:
        keys = ", ".join(sorted(record)) or "none"
        raise PreprocessError(f"{where}: no key {json_key!r} (keys: {keys}): "
                              "pass --json-keys with the key that holds the text")
    value = record[json_key]
    if not isinstance(value, str):
        raise PreprocessError(f"{where}: {json_key!r} is a {type(value).__name__}, not a string")
    return value


def iter_documents(paths: list[str], json_key: str = "text",
                   text_mode: str = "file") -> Iterator[Document]:
    """Every non-empty document of `paths`, in order (what tokenizer training reads)."""
    for where, raw, as_json in raw_records(paths, text_mode):
        text = parse_record(where, raw, as_json, json_key)
        if text:
            yield Document(text, where)


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


def indexed_dataset_module() -> Any:
    """megatron's indexed_dataset, without the import-time "Transformer Engine and Apex are not
    installed" warnings: importing it imports all of megatron.core (optimizers included, about
    3-4 s), none of which the writer uses."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


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


def main(argv: Optional[list[str]] = None) -> int:
    from nemo_lite.cli.data import main as cli_main

    return cli_main(["preprocess", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
