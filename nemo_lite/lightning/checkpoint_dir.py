"""A checkpoint directory on disk: its layout, its manifest, and which one is the newest.

Pure filesystem code (no torch, no process group), shared by the checkpoint IO, AutoResume
and the tests.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import zlib
from pathlib import Path
from typing import Any

from nemo_lite.io.names import CONTEXT_DIR  # noqa: F401 - part of a checkpoint's layout

WEIGHTS_DIR = "weights"
MANIFEST = "nemo_lite.json"
INCOMPLETE_SUFFIX = ".incomplete"
FORMAT = "nemo_lite/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the path, the problem and the fix."""


NEMO_SCHEME = "nemo://"


def nemo_home() -> Path:
    """NeMo's `NEMO_HOME` (default ~/.cache/nemo): imported models live under `models/`."""
    return Path(os.environ.get("NEMO_HOME", Path.home() / ".cache" / "nemo"))


def resolve_checkpoint_path(path: str | Path) -> Path:
    """`nemo://<org>/<name>` (NeMo's name for an imported model) is
    `$NEMO_HOME/models/<org>/<name>`, where `llm.import_ckpt` writes by default; any other path
    is itself."""
    text = str(path)
    if not text.startswith(NEMO_SCHEME):
        return Path(text)
    name = text[len(NEMO_SCHEME):].strip("/")
    if not name or ".." in Path(name).parts:
        raise CheckpointError(f"{text}: expected nemo://<org>/<name> (a model imported under "
                              f"{nemo_home() / 'models'}).")
    return nemo_home() / "models" / name


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            crc = zlib.crc32(block, crc)  # releases the GIL: files are summed side by side
    return crc


def file_table(root: Path, checksums: bool) -> dict[str, dict[str, int]]:
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    table = {str(p.relative_to(root)): {"bytes": p.stat().st_size} for p in paths}
    if checksums:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for path, crc in zip(paths, pool.map(_crc32, paths), strict=True):
                table[str(path.relative_to(root))]["crc32"] = crc
    return table


def fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_complete_checkpoint(path: Path) -> bool:
    return (
        path.is_dir()
        and not path.name.endswith(INCOMPLETE_SUFFIX)
        and read_manifest(path) is not None
    )


def find_latest_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `directory` (links not followed)."""
    root = Path(directory)
    if not root.is_dir():
        return None
    best: tuple[int, float, str] | None = None
    found = None
    for child in root.iterdir():
        if child.is_symlink() or not is_complete_checkpoint(child):
            continue
        manifest = read_manifest(child) or {}
        key = (int(manifest.get("step", -1)), float(manifest.get("saved_at", 0.0)), child.name)
        if best is None or key > best:
            best, found = key, child
    return found
