"""Text -> megatron .bin/.idx -> megatron's IndexedDataset -> text, with real files and processes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nemo_lite.llm.data.corpus import indexed_unigram_entropy, unigram_entropy
from nemo_lite.llm.data.preprocess import InputNotFoundError, PreprocessError, preprocess
from nemo_lite.llm.tokenizer import ByteTokenizer, get_tokenizer, train_bpe_tokenizer
from tests.data.test_tokenizer import UNSEEN, corpus_texts, small_corpus, train_sentencepiece

BIN = Path(sys.executable).parent


def read_back(prefix: Path) -> list[np.ndarray]:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))
    assert len(dataset.document_indices) == len(dataset) + 1  # one sequence per document
    # Copies: megatron's arrays are views of its mmap, unmapped when the dataset is collected.
    return [dataset[i].copy() for i in range(len(dataset))]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pre")


@pytest.fixture(scope="module")
def corpus(workdir) -> Path:
    return small_corpus(workdir, max_bytes=300_000)


@pytest.fixture(scope="module")
def bpe(workdir, corpus):
    return train_bpe_tokenizer(str(corpus), vocab_size=800, output_dir=str(workdir / "bpe"))


@pytest.fixture(scope="module")
def sentencepiece(workdir, corpus):
    return get_tokenizer(str(train_sentencepiece(workdir, corpus_texts(corpus)[:20])))


@pytest.mark.parametrize("kind", ["byte", "bpe", "sentencepiece"])
def test_round_trip_through_megatron(kind, request, workdir, corpus):
    from megatron.core.datasets.indexed_dataset import DType

    tokenizer = ByteTokenizer() if kind == "byte" else request.getfixturevalue(kind)
    texts = [*corpus_texts(corpus), UNSEEN]
    source = write_jsonl(workdir / f"{kind}.jsonl", [{"text": t, "id": i} for i, t in
                                                     enumerate(texts)])
    summary = preprocess(source, workdir / kind / "data", tokenizer=tokenizer, log_interval=None)
    docs = read_back(workdir / kind / "data")
    assert len(docs) == summary.documents == len(texts)
    for doc, text in zip(docs, texts, strict=True):
        assert doc.dtype == DType.optimal_dtype(tokenizer.vocab_size)
        assert doc[-1] == tokenizer.eos_id  # end-of-document appended
        assert tokenizer.eos_id not in doc[:-1]
        assert tokenizer.ids_to_text(doc[:-1].tolist()) == text
        assert doc[:-1].tolist() == tokenizer.text_to_ids(text)
    assert summary.tokens == sum(d.size for d in docs)
    assert summary.input_bytes == source.stat().st_size
    bin_idx = sum(os.path.getsize(f"{workdir / kind / 'data'}{s}") for s in (".bin", ".idx"))
    assert summary.output_bytes == bin_idx
    assert summary.unigram_entropy == pytest.approx(unigram_entropy(docs), rel=1e-12)
    assert summary.unigram_entropy == pytest.approx(
        indexed_unigram_entropy(str(workdir / kind / "data")), rel=1e-12)
    meta = json.loads((workdir / kind / "data.meta.json").read_text())
    assert meta["tokens"] == summary.tokens and meta["eod_id"] == tokenizer.eos_id


def test_one_and_two_workers_write_identical_files(workdir, corpus, bpe, capsys):
    one = preprocess(corpus, workdir / "w1" / "d", tokenizer=bpe, workers=1, log_interval=None)
    two = preprocess(corpus, workdir / "w2" / "d", tokenizer=bpe, workers=2, chunksize=3,
                     log_interval=0.0)
    for suffix in (".bin", ".idx"):
        assert (workdir / "w1" / f"d{suffix}").read_bytes() == \
            (workdir / "w2" / f"d{suffix}").read_bytes()
    assert (one.documents, one.tokens) == (two.documents, two.tokens)
    progress = capsys.readouterr().err
    assert "docs/s" in progress and "MB/s" in progress  # a progress line per document at 0 s
    assert not list((workdir / "w2").glob("*.tmp*"))


def test_text_files_directories_gzip_and_empty_documents(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("second file\nwith two lines\n", encoding="utf-8")
    (src / "a.txt").write_text(UNSEEN, encoding="utf-8")
    with gzip.open(src / "sub" / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"body": "zipped"}) + "\n\n" + json.dumps({"body": ""}) + "\n")
    tok = ByteTokenizer()
    summary = preprocess(src, tmp_path / "out", json_key="body", log_interval=None)
    texts = [tok.ids_to_text(d[:-1].tolist()) for d in read_back(tmp_path / "out")]
    assert texts == [UNSEEN, "second file\nwith two lines\n", "zipped"]  # sorted, whole files
    assert summary.skipped_empty == 1
    preprocess(src / "b.txt", tmp_path / "lines", text_mode="line", log_interval=None)
    texts = [tok.ids_to_text(d[:-1].tolist()) for d in read_back(tmp_path / "lines")]
    assert texts == (src / "b.txt").read_text().splitlines()


def test_bad_inputs_raise_clear_errors_and_leave_nothing(tmp_path, workdir):
    good = {"text": "fine"}
    cases = {
        "missing key": ([good, {"content": "x"}], PreprocessError, r"bad\.jsonl:2: no key 'text' "
                        r"\(keys: content\).*--json-keys"),
        "bad json": ([good, good], PreprocessError, r"bad\.jsonl:3: not valid JSON"),
        "not an object": ([good, ["a"]], PreprocessError, r"bad\.jsonl:2: a JSON list"),
        "not a string": ([good, {"text": 3}], PreprocessError, r"bad\.jsonl:2: 'text' is a int"),
    }
    for name, (records, error, message) in cases.items():
        path = write_jsonl(tmp_path / "bad.jsonl", records)
        if name == "bad json":
            path.write_text(path.read_text() + '{"text": "unterminated\n')
        for workers in (1, 2):
            with pytest.raises(error, match=message):
                preprocess(path, tmp_path / "out" / "d", workers=workers, log_interval=None)
            assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out"), name
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(PreprocessError, match=r"latin1\.txt: not UTF-8"):
        preprocess(tmp_path / "latin1.txt", tmp_path / "out" / "d", log_interval=None)
    (tmp_path / "empty.jsonl").write_text("\n \n")
    with pytest.raises(PreprocessError, match="no documents.*empty"):
        preprocess(tmp_path / "empty.jsonl", tmp_path / "out" / "d", log_interval=None)
    with pytest.raises(InputNotFoundError, match="does not exist") as e:
        preprocess(tmp_path / "nope.jsonl", tmp_path / "out" / "d")
    assert isinstance(e.value, FileNotFoundError) and "\n" not in str(e.value)
    with pytest.raises(PreprocessError, match="is a directory"):
        preprocess(tmp_path / "latin1.txt", workdir)
    with pytest.raises(PreprocessError, match="text_mode"):
        preprocess(tmp_path / "latin1.txt", tmp_path / "x", text_mode="para")
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


def _cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(BIN / "nemo-lite"), "data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_data_help_is_fast_and_imports_no_torch(tmp_path):
    start = time.perf_counter()
    proc = _cli("--help", cwd=tmp_path)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    for command in ("corpus", "train-tokenizer", "preprocess"):
        assert command in proc.stdout
    code = ("import sys\nfrom nemo_lite.cli import main\nsys.argv = ['nemo-lite', 'data', "
            "'preprocess', '--help']\ntry:\n    main()\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint(sorted({'torch', 'megatron', 'lightning', 'nemo_run'} "
            "& {m.split('.')[0] for m in sys.modules}))")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == "[]"
    assert elapsed < 10  # loose (a shared CI machine); typically well under 1 s


def test_cli_corpus_tokenizer_preprocess_end_to_end(tmp_path):
    steps = [
        ("corpus", "--output", "c/stdlib.jsonl", "--max-mb", "0.2"),
        ("train-tokenizer", "--input", "c/stdlib.jsonl", "--vocab-size", "500", "--output", "tok"),
        ("preprocess", "--input", "c/stdlib.jsonl", "--output-prefix", "d/stdlib",
         "--tokenizer", "tok", "--workers", "2", "--quiet"),
    ]
    for args in steps:
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr[-3000:])
    assert "documents" in proc.stdout and "MB/s" in proc.stdout
    tok = get_tokenizer(str(tmp_path / "tok"))
    texts = corpus_texts(tmp_path / "c" / "stdlib.jsonl")
    docs = read_back(tmp_path / "d" / "stdlib")
    assert [tok.ids_to_text(d[:-1].tolist()) for d in docs] == texts



def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = _cli("preprocess", "--input", "missing.jsonl", "--output-prefix", "d/x", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: input missing.jsonl does not exist")
    proc = _cli("preprocess", "--input", "missing.jsonl", "--output-prefix", "d/x",
                "--tokenizer", "nope/", cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
