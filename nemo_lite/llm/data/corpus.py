"""An offline real corpus: the Python standard library's own source, one document per module.

Why this text: every machine that runs nemo_lite has it (no download, no network, nothing to
ship), it is real, varied, human-written text (code, docstrings, comments) rather than noise,
and it is PSF-licensed. Which files: `*.py` under `sysconfig.get_paths()["stdlib"]` in sorted
path order, skipping tests, site-/dist-packages, machine-generated `_sysconfigdata*`, the
packages distributions split off or add (tkinter, idlelib, turtledemo, lib2to3, distutils,
ensurepip, macholib; sitecustomize.py) and files above `max_file_bytes` (generated tables
such as pydoc_data/topics.py); kept until `max_bytes` of text. The same CPython release gives
the same bytes (`sha256` in the summary lets two machines check); other 3.11.x releases give
the same module list with some modules' text changed by bug fixes (3.11.2 vs 3.11.7: 101 of
444 differ, sizes within 0.3%). `unigram_entropy` is the 0-order baseline: a language model
that has learnt anything beats it.
"""

import hashlib
import json
import math
import os
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

DEFAULT_MAX_BYTES = 8_000_000
DEFAULT_MAX_FILE_BYTES = 200_000
SKIP_DIRS = frozenset({
    "test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
    "tkinter", "idlelib", "turtledemo", "lib2to3", "distutils", "ensurepip",
    "macholib",  # macOS-only, dropped by Debian's python3.11
})
# Files distributions add (Debian: sitecustomize.py, _distutils_system_mod.py).
SKIP_FILES = frozenset({"sitecustomize.py", "usercustomize.py", "_distutils_system_mod.py"})


class CorpusError(ValueError):
    """A corpus that cannot be built as asked."""


@dataclass
class CorpusSummary:
    path: str
    documents: int
    text_bytes: int  # UTF-8 bytes of the documents' text
    file_bytes: int  # size of the jsonl written (text + JSON escaping)
    sha256: str
    python: str
    stdlib: str
    skipped_large: int

    def __str__(self) -> str:
        return (f"corpus {self.path}: {self.documents:,} documents, "
                f"{self.text_bytes / 1e6:.2f} MB of text ({self.file_bytes / 1e6:.2f} MB jsonl) "
                f"from the Python {self.python} standard library ({self.stdlib}); "
                f"sha256 {self.sha256[:16]}")


def stdlib_modules(stdlib_dir: Optional[str] = None) -> list[str]:
    """Relative paths (posix form, sorted) of the stdlib's .py files the corpus may use."""
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith("config-")]
        for name in filenames:
            if (name.endswith(".py") and name not in SKIP_FILES
                    and not name.startswith(("test_", "_sysconfigdata"))):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)


def iter_stdlib_documents(
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    stdlib_dir: Optional[str] = None,
    skipped: Optional[list[str]] = None,
) -> Iterator[dict[str, str]]:
    """{"text", "path"} per module in path order, until the next one would pass `max_bytes`."""
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    total = 0
    for rel in stdlib_modules(root):
        with open(os.path.join(root, rel), "rb") as f:
            raw = f.read()
        if len(raw) > max_file_bytes or not raw.strip():
            if skipped is not None and raw.strip():
                skipped.append(rel)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # none in CPython 3.11; a patched stdlib might have one
            continue
        if total + len(raw) > max_bytes:
            return
        total += len(raw)
        yield {"text": text, "path": rel}


def build_stdlib_corpus(
    output: Union[str, os.PathLike],
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    stdlib_dir: Optional[str] = None,
) -> CorpusSummary:
    """Write the stdlib corpus as jsonl (`{"text": ..., "path": ...}` per line) to `output`."""
    if max_bytes <= 0 or max_file_bytes <= 0:
        raise CorpusError(f"max_bytes ({max_bytes}) and max_file_bytes ({max_file_bytes}) must "
                          "be positive")
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        raise CorpusError(f"no standard library at {root}: pass stdlib_dir=")
    output = os.fspath(output)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    digest, skipped = hashlib.sha256(), []
    documents = text_bytes = 0
    tmp = f"{output}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        for doc in iter_stdlib_documents(max_bytes, max_file_bytes, root, skipped):
            line = (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            digest.update(line)
            documents += 1
            text_bytes += len(doc["text"].encode("utf-8"))
    if documents == 0:
        os.remove(tmp)
        raise CorpusError(f"no module of {root} fits max_bytes={max_bytes}: raise it")
    os.replace(tmp, output)
    return CorpusSummary(path=output, documents=documents, text_bytes=text_bytes,
                         file_bytes=os.path.getsize(output), sha256=digest.hexdigest(),
                         python=_version_of(root), stdlib=root,
                         skipped_large=len(skipped))


def _version_of(stdlib_dir: str) -> str:
    """This interpreter's version for its own stdlib; else what the directory name says."""
    if os.path.realpath(stdlib_dir) == os.path.realpath(sysconfig.get_paths()["stdlib"]):
        return ".".join(map(str, sys.version_info[:3]))
    return os.path.basename(os.path.normpath(stdlib_dir)).removeprefix("python") or "?"


def entropy_from_counts(counts: Any) -> float:
    """Shannon entropy (nats) of the distribution given by non-negative `counts`."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def unigram_entropy(ids: Union[np.ndarray, Iterable[Any]]) -> float:
    """Unigram (0-order) entropy in nats/token of a token-id stream (an array or a list of
    ints, or an iterable of arrays such as a megatron IndexedDataset's documents).

    The loss of the best model that ignores context: `exp(entropy)` is its perplexity.
    """
    if isinstance(ids, np.ndarray):
        flat = ids.ravel()
    else:
        parts = [np.atleast_1d(np.asarray(x)) for x in ids]
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if flat.size == 0:
        return 0.0
    if flat.dtype.kind not in "iu" or flat.min() < 0:
        raise ValueError("token ids must be non-negative integers")
    return entropy_from_counts(np.bincount(flat.astype(np.int64)))


def indexed_unigram_entropy(prefix: str) -> float:
    """`unigram_entropy` of every token in the megatron indexed dataset `<prefix>.bin/.idx`."""
    from nemo_lite.llm.data.indexed_inputs import indexed_dataset_module

    IndexedDataset = indexed_dataset_module().IndexedDataset
    if not IndexedDataset.exists(prefix):
        raise FileNotFoundError(f"no indexed dataset {prefix}.bin/.idx: run "
                                "`nemo-lite data preprocess` first")
    dataset = IndexedDataset(prefix)
    return unigram_entropy(dataset[i] for i in range(len(dataset)))


def perplexity(entropy_nats: float) -> float:
    return math.exp(entropy_nats)
