"""What a user hands PreTrainingDataModule, checked before megatron sees it: dataset paths and
blend weights, the split, and the .bin/.idx files themselves.

Megatron's own failures on bad files are bare asserts (or an endless loop for a split without
documents), so every problem here is named with its file and the fix.
"""

import ast
import math
import os
import re
import struct
from typing import Any, Optional

import numpy as np

SPLITS = ("train", "validation", "test")
Blend = tuple[list[str], Optional[list[float]]]


class DataFileNotFoundError(FileNotFoundError):
    """A dataset prefix without its .bin or .idx file."""


class IndexedDataError(ValueError):
    """A .bin/.idx pair that is truncated, corrupt or inconsistent."""


class DataConfigError(ValueError):
    """Arguments that cannot describe a dataset: paths, weights, split, sizes, tokenizer."""


# --- paths, weights and split ----------------------------------------------------------------
def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def parse_blend(paths: Any, where: str = "paths") -> Blend:
    """A prefix, a list of prefixes, or [weight, prefix, weight, prefix, ...] -> (prefixes,
    weights or None), as megatron's data_path; weights must be positive numbers."""
    if isinstance(paths, (str, os.PathLike)):
        items = [paths]
    elif isinstance(paths, (list, tuple)):
        items = list(paths)
    else:
        raise DataConfigError(
            f"{where}={paths!r}: give a dataset prefix (the path without .bin/.idx), a list of "
            "prefixes, a list alternating weight and prefix, or a dict of train/validation/test.")
    if not items:
        raise DataConfigError(f"{where} is empty: give at least one dataset prefix.")
    if not any(_is_number(item) for item in items):
        bad = [item for item in items if not isinstance(item, (str, os.PathLike))]
        if bad:
            raise DataConfigError(f"{where}: {bad[0]!r} is not a dataset prefix (a path string).")
        return [os.fspath(item) for item in items], None
    if len(items) % 2:
        raise DataConfigError(
            f"{where} mixes weights and prefixes but has an odd number of entries ({len(items)}): "
            "alternate weight, prefix for every dataset, e.g. [0.3, 'data/a', 0.7, 'data/b'].")
    weights, prefixes = items[0::2], items[1::2]
    example = "alternate weight, prefix, e.g. [0.3, 'data/a', 0.7, 'data/b']"
    for i, (weight, prefix) in enumerate(zip(weights, prefixes, strict=True)):
        if not _is_number(weight):
            raise DataConfigError(f"{where}: entry {2 * i} ({weight!r}) should be a weight: "
                                  f"{example}.")
        value = float(weight)
        if not (math.isfinite(value) and value > 0):
            raise DataConfigError(
                f"{where}: weight {weight!r} of dataset {i} ({prefix!r}) is not a positive number: "
                "give every dataset a weight > 0 (drop a dataset instead of weighting it 0).")
        if _is_number(prefix) or not isinstance(prefix, (str, os.PathLike)):
            raise DataConfigError(f"{where}: entry {2 * i + 1} ({prefix!r}) should be a dataset "
                                  f"prefix: {example}.")
    prefixes = [os.fspath(p) for p in prefixes]
    return prefixes, (None if len(prefixes) == 1 else [float(w) for w in weights])


def _from_text(paths: Any) -> Any:
    """A list or dict that reached us as text (a NeMo-Run override such as
    `data.paths=[0.3,data/a,0.7,data/b]`) -> the list or dict; any other value unchanged."""
    if not isinstance(paths, str) or paths.strip()[:1] not in ("[", "{"):
        return paths
    try:
        return ast.literal_eval(paths.strip())
    except (ValueError, SyntaxError):
        if paths.strip()[0] == "{":
            raise DataConfigError(f"paths={paths!r} does not parse as a dict: quote the prefixes, "
                                  "e.g. {'train': ['data/a'], 'validation': ['data/b']}.") from None
        return [item.strip().strip("'\"") for item in paths.strip()[1:-1].split(",")]


def parse_paths(paths: Any) -> dict[str, Optional[Blend]]:
    """One blend for all splits (key "all") or one per split (keys train/validation/test)."""
    paths = _from_text(paths)
    if not isinstance(paths, dict):
        return {"all": parse_blend(paths)}
    unknown = sorted(set(paths) - set(SPLITS))
    if unknown:
        raise DataConfigError(
            f"paths has unknown split {unknown[0]!r}: the keys are 'train', 'validation', 'test'.")
    return {s: (parse_blend(_from_text(paths[s]), f"paths[{s!r}]") if paths.get(s) else None)
            for s in SPLITS}


def parse_split(split: str) -> str:
    """'900,50,50' -> the same weights as megatron reads them; refuses what megatron would
    misread (its parser keeps only digits and dots) or divide by zero on."""
    parts = [p.strip() for p in re.split(r"[,/]", str(split))]
    number = re.compile(r"^(\d+(\.\d*)?|\.\d+)$")
    if not 1 <= len(parts) <= 3 or not all(number.match(p) for p in parts):
        raise DataConfigError(
            f"split={split!r} does not parse: give up to three comma-separated non-negative "
            "numbers for train, validation, test, e.g. split='900,50,50'.")
    if sum(float(p) for p in parts) <= 0:
        raise DataConfigError(f"split={split!r} gives every split weight 0: "
                              "e.g. split='900,50,50'.")
    return ",".join(parts)


# --- indexed dataset files -------------------------------------------------------------------
_INDEX_HEADER = b"MMIDIDX\x00\x00"
_HEADER_BYTES = 34  # magic 9 + version 8 + dtype code 1 + sequence count 8 + document count 8
_DTYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}  # megatron's DType codes


def check_indexed_dataset(prefix: str) -> np.ndarray:
    """Check a .bin/.idx pair the way megatron will read it; returns the sequence lengths.

    Constant work besides the lengths array: header, sizes implied by the counts, document
    boundaries, and the last sequence's end against the .bin's length.
    """
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    rerun = "re-run the preprocessor to write the pair again"
    for path in (bin_path, idx_path):
        if not os.path.isfile(path):
            hint = ""
            if prefix.endswith((".bin", ".idx")):
                hint = f" (drop the extension: the prefix is {prefix[:-4]!r})"
            raise DataFileNotFoundError(
                f"{path} not found for dataset prefix {prefix!r}{hint}: a prefix names a .bin and "
                ".idx pair written by the preprocessor; check the path or preprocess the data.")
    idx_size, bin_size = os.path.getsize(idx_path), os.path.getsize(bin_path)
    with open(idx_path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    if head[:9] != _INDEX_HEADER[: len(head[:9])]:
        raise IndexedDataError(f"{idx_path} is not a Megatron indexed-dataset index (bad header "
                               f"{head[:9]!r}): {rerun}.")
    if len(head) < _HEADER_BYTES:
        raise IndexedDataError(f"{idx_path} is truncated ({idx_size} bytes, header alone is "
                               f"{_HEADER_BYTES}): {rerun}.")
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[9:])
    if version != 1:
        raise IndexedDataError(f"{idx_path} has index version {version}; megatron reads version 1: "
                               f"{rerun}.")
    if code not in _DTYPE_BYTES:
        raise IndexedDataError(f"{idx_path} names unknown token dtype code {code}: {rerun}.")
    expected = _HEADER_BYTES + n_seq * (4 + 8) + n_doc * 8
    if idx_size < expected:
        raise IndexedDataError(f"{idx_path} is truncated: {idx_size} bytes, its counts ({n_seq} "
                               f"sequences, {n_doc - 1} documents) need {expected}: {rerun}.")
    if idx_size not in (expected, expected + n_seq):  # + one mode byte per sequence: multimodal
        raise IndexedDataError(f"{idx_path} is {idx_size} bytes, its counts ({n_seq} sequences, "
                               f"{n_doc - 1} documents) need {expected}: {rerun}.")
    if n_seq == 0 or n_doc < 2:
        raise IndexedDataError(f"{idx_path} holds no documents: preprocess a non-empty input.")
    lengths = np.memmap(idx_path, dtype=np.int32, mode="r", offset=_HEADER_BYTES, shape=(n_seq,))
    pointers = np.memmap(idx_path, dtype=np.int64, mode="r", offset=_HEADER_BYTES + 4 * n_seq,
                         shape=(n_seq,))
    docs = np.memmap(idx_path, dtype=np.int64, mode="r", offset=_HEADER_BYTES + 12 * n_seq,
                     shape=(n_doc,))
    if docs[0] != 0 or docs[-1] != n_seq or pointers[0] != 0 or lengths.min() < 0:
        raise IndexedDataError(f"{idx_path} is corrupt (its document or sequence table is "
                               f"inconsistent): {rerun}.")
    described = int(pointers[-1]) + int(lengths[-1]) * _DTYPE_BYTES[code]
    if bin_size != described:
        state = "truncated" if bin_size < described else "longer than its index says"
        raise IndexedDataError(
            f"{bin_path} is {state}: {bin_size} bytes, {idx_path} describes {described}. The pair "
            f"comes from an interrupted or different preprocessing run: {rerun}.")
    return np.asarray(lengths)


# --- the tokenizer megatron reads ------------------------------------------------------------


def indexed_dataset_module() -> Any:
    """megatron's indexed_dataset, without the import-time "Transformer Engine and Apex are not
    installed" warnings: importing it imports all of megatron.core (optimizers included, about
    3-4 s), none of which the writer uses."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset
