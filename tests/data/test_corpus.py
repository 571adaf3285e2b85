"""The offline stdlib corpus (deterministic, capped, real files) and the unigram entropy."""

from __future__ import annotations

import json
import math
import os
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from nemo_lite.llm.data.corpus import (
    DEFAULT_MAX_BYTES,
    SKIP_DIRS,
    CorpusError,
    build_stdlib_corpus,
    entropy_from_counts,
    stdlib_modules,
    unigram_entropy,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "stdlib.jsonl"
    return out, build_stdlib_corpus(out)


def test_default_corpus_is_capped_real_stdlib_text(default_corpus):
    path, summary = default_corpus
    docs = records(path)
    assert summary.documents == len(docs) > 100
    assert summary.text_bytes == sum(len(d["text"].encode("utf-8")) for d in docs)
    assert summary.text_bytes <= DEFAULT_MAX_BYTES
    assert summary.file_bytes == path.stat().st_size
    paths = [d["path"] for d in docs]
    assert paths == sorted(paths) and len(set(paths)) == len(paths)
    for doc in docs:
        assert (STDLIB / doc["path"]).read_text(encoding="utf-8") == doc["text"]
        parts = doc["path"].split("/")
        assert not SKIP_DIRS & set(parts[:-1]), doc["path"]
        assert not parts[-1].startswith(("test_", "_sysconfigdata"))
        assert len(doc["text"].encode("utf-8")) <= 200_000
    # Capped, not exhausted: the next eligible module would have passed the cap.
    eligible = [p for p in stdlib_modules() if 0 < (STDLIB / p).stat().st_size <= 200_000]
    following = eligible[eligible.index(paths[-1]) + 1]
    assert summary.text_bytes + (STDLIB / following).stat().st_size > DEFAULT_MAX_BYTES
    assert str(summary).startswith(f"corpus {path}: {summary.documents:,} documents")


def test_corpus_is_deterministic(default_corpus, tmp_path):
    path, summary = default_corpus
    again = build_stdlib_corpus(tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()
    assert again.sha256 == summary.sha256


def test_smaller_cap_is_a_prefix_and_bad_caps_are_refused(default_corpus, tmp_path):
    path, _ = default_corpus
    small = build_stdlib_corpus(tmp_path / "small.jsonl", max_bytes=100_000, max_file_bytes=20_000)
    docs = records(tmp_path / "small.jsonl")
    assert small.text_bytes <= 100_000 and small.documents == len(docs)
    assert all(len(d["text"].encode()) <= 20_000 for d in docs)
    full = [d["path"] for d in records(path)]
    assert [d["path"] for d in docs] == [p for p in full if (STDLIB / p).stat().st_size
                                         <= 20_000][:len(docs)]
    with pytest.raises(CorpusError, match="must be positive"):
        build_stdlib_corpus(tmp_path / "x.jsonl", max_bytes=0)
    with pytest.raises(CorpusError, match="no module"):
        build_stdlib_corpus(tmp_path / "x.jsonl", max_bytes=10)
    with pytest.raises(CorpusError, match="no standard library"):
        build_stdlib_corpus(tmp_path / "x.jsonl", stdlib_dir=str(tmp_path / "nowhere"))
    assert not os.path.exists(tmp_path / "x.jsonl")


def test_unigram_entropy_on_hand_computable_streams():
    assert unigram_entropy([7, 7, 7]) == 0.0
    assert unigram_entropy([0, 0, 1, 1]) == pytest.approx(math.log(2))
    assert unigram_entropy(np.arange(8, dtype=np.uint16)) == pytest.approx(math.log(8))
    # p = (1/2, 1/4, 1/4): H = 1/2 ln 2 + 2 * 1/4 ln 4 = 1.5 ln 2
    assert unigram_entropy([3, 3, 1, 2]) == pytest.approx(1.5 * math.log(2))
    # a stream split into documents (as an IndexedDataset gives it) counts the same
    assert unigram_entropy([np.array([3, 3]), np.array([1, 2])]) == unigram_entropy([3, 3, 1, 2])
    assert entropy_from_counts([2, 1, 1, 0]) == pytest.approx(1.5 * math.log(2))
    assert unigram_entropy([]) == 0.0
    with pytest.raises(ValueError, match="non-negative integers"):
        unigram_entropy([1, -1])
    with pytest.raises(ValueError, match="non-negative integers"):
        unigram_entropy(np.array([0.5, 1.0]))
