"""Where a Hugging Face checkpoint is, and reading its tensors one at a time.

`resolve_source("hf:///abs/dir")` is that directory; `resolve_source("hf://org/name")` is the
newest snapshot of `org/name` in the local Hugging Face cache (`$HF_HUB_CACHE`, else
`$HF_HOME/hub`, else `~/.cache/huggingface/hub`). Nothing is ever downloaded.

`TensorReader` reads safetensors files through `safe_open` (memory-mapped: a tensor is read when
asked for) from `model.safetensors`, a sharded index (`model.safetensors.index.json`), or, when
there is no safetensors file, `pytorch_model.bin` (+ index) through torch's weights_only loader.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SAFETENSORS, SAFE_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


class HFCheckpointError(ValueError):
    """A Hugging Face checkpoint that cannot be read; the message names the file or tensor."""


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_source(source: str | os.PathLike) -> Path:
    """The local directory of `hf:///abs/dir`, `hf://org/name` (local cache only) or a path."""
    text = os.fspath(source)
    if text.startswith("hf://"):
        text = text[len("hf://"):]
        if not text.startswith("/"):
            return _cached(text)
    path = Path(text)
    if not path.is_dir():
        raise HFCheckpointError(f"{path}: no such directory (give hf:///absolute/dir or "
                                "hf://org/name from the local Hugging Face cache).")
    return path


def _cached(name: str) -> Path:
    cache = hub_cache()
    repo = cache / ("models--" + name.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        raise HFCheckpointError(
            f"hf://{name} is not in the local Hugging Face cache: looked for {repo} (set "
            "HF_HUB_CACHE or HF_HOME, or give hf:///absolute/dir). Nothing is downloaded.")
    ref = repo / "refs" / "main"
    if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
        return snapshots / ref.read_text().strip()
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    if not found:
        raise HFCheckpointError(f"hf://{name}: {snapshots} holds no snapshot.")
    return found[-1]


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    if not path.is_file():
        raise HFCheckpointError(f"{path} is missing: a Hugging Face model directory has "
                                "config.json beside its weights.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise HFCheckpointError(f"{path}: not valid JSON ({error.msg}, line {error.lineno}).") \
            from None


# safetensors' dtype names -> torch's
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                      "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                      "BOOL": "bool"}


class TensorReader:
    """The tensors of a Hugging Face checkpoint directory, by name, read on demand."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, Path] = {}  # tensor name -> file
        self.safetensors = True
        self._bin_cache: dict[Path, Any] = {}  # one .bin shard at a time
        if (directory / SAFE_INDEX).is_file():
            self._from_index(directory / SAFE_INDEX)
        elif (directory / SAFETENSORS).is_file():
            self._from_file(directory / SAFETENSORS)
        elif (directory / BIN_INDEX).is_file():
            self.safetensors = False
            self._from_index(directory / BIN_INDEX)
        elif (directory / BIN).is_file():
            self.safetensors = False
            self.files = dict.fromkeys(self._bin(directory / BIN), directory / BIN)
        else:
            raise HFCheckpointError(
                f"{directory}: no weights ({SAFETENSORS}, {SAFE_INDEX}, {BIN} or {BIN_INDEX}).")

    def _from_index(self, index: Path) -> None:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as error:
            raise HFCheckpointError(f"{index}: not a weight index ({error}).") from None
        for name, file in weight_map.items():
            path = self.directory / file
            if not path.is_file():
                raise HFCheckpointError(f"{index} names {file} (for {name}), which is missing.")
            self.files[name] = path

    def _from_file(self, path: Path) -> None:
        with self._handle(path) as handle:
            for name in handle.keys():
                self.files[name] = path

    @staticmethod
    def _handle(path: Path) -> Any:
        """The file memory-mapped, for one use: closing it unmaps the pages read, so the
        process does not keep the whole checkpoint resident while converting."""
        from safetensors import safe_open

        try:
            return safe_open(str(path), framework="pt")
        except Exception as error:  # noqa: BLE001 - safetensors raises several kinds
            raise HFCheckpointError(f"{path}: not a readable safetensors file (truncated or "
                                    f"corrupt: {' '.join(str(error).split())}).") from None

    def _bin(self, path: Path) -> dict[str, Any]:
        import torch

        if path not in self._bin_cache:
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as error:  # noqa: BLE001
                raise HFCheckpointError(f"{path}: cannot be read with torch's weights_only "
                                        f"loader ({' '.join(str(error).split())}).") from None
            self._bin_cache = {path: loaded}  # one .bin shard held at a time
        return self._bin_cache[path]

    def names(self) -> list[str]:
        return list(self.files)

    def get(self, name: str) -> Any:
        path = self.files.get(name)
        if path is None:
            raise HFCheckpointError(f"{self.directory}: tensor {name} is missing.")
        if not self.safetensors:
            return self._bin(path)[name]
        try:
            with self._handle(path) as handle:
                return handle.get_tensor(name)
        except HFCheckpointError:
            raise
        except Exception as error:  # noqa: BLE001
            raise HFCheckpointError(f"{path}: tensor {name} cannot be read (truncated or "
                                    f"corrupt: {' '.join(str(error).split())}).") from None

    def meta(self, name: str) -> Any:
        """A meta tensor with `name`'s shape and dtype, read from the file's header only (a
        .bin shard is memory-mapped); the truncated-file and missing-tensor errors of `get`."""
        import torch

        path = self.files.get(name)
        if path is None:
            raise HFCheckpointError(f"{self.directory}: tensor {name} is missing.")
        if not self.safetensors:
            return torch.empty_like(self._bin(path)[name], device="meta")
        with self._handle(path) as handle:
            part = handle.get_slice(name)
            dtype = SAFETENSORS_DTYPES.get(part.get_dtype())
            if dtype is None:
                raise HFCheckpointError(f"{path}: tensor {name} has dtype {part.get_dtype()}, "
                                        "which nemo_lite does not convert.")
            return torch.empty(part.get_shape(), dtype=getattr(torch, dtype), device="meta")

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)
