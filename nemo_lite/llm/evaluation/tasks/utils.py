"""Loaders of the shipped tasks' local jsonl files (lm-eval's `custom_dataset`): nothing is
downloaded and nothing is cached outside the process."""

from pathlib import Path

HERE = Path(__file__).parent


def _jsonl(name: str):
    import json

    from datasets import Dataset, DatasetDict

    rows = [json.loads(line) for line in (HERE / name).read_text().splitlines() if line]
    return DatasetDict({"test": Dataset.from_list(rows)})


def next_line_dataset(**kwargs):
    return _jsonl("stdlib_next_line.jsonl")


def docs_dataset(**kwargs):
    return _jsonl("stdlib_docs.jsonl")
