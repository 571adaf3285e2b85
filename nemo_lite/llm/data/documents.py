"""Reading input documents: jsonl or plain-text files (optionally .gz), or directories of them.

Shared by tokenizer training (`llm.tokenizer.train_bpe_tokenizer`) and preprocessing
(`llm.data.preprocess`): each reads the same documents in the same order. Bad input raises
`PreprocessError` naming `file:line` and the fix; a missing path `InputNotFoundError`.
"""

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

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
