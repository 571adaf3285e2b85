#!/usr/bin/env python
"""Strip outputs from Jupyter notebooks, so that git holds only their sources.

    python scripts/strip_notebooks.py                 # every notebooks/*.ipynb, in place
    python scripts/strip_notebooks.py a.ipynb b.ipynb
    python scripts/strip_notebooks.py --check         # exit 1 naming notebooks with outputs

Removes cell outputs, execution counts and per-run metadata (execution timings, widget state,
the kernel's Python version); keeps sources, cell ids, the kernelspec and nbformat v4.
Needs nbformat (in the dev extras).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CELL_METADATA_DROPPED = ("execution", "collapsed", "scrolled", "ExecuteTime")
NOTEBOOK_METADATA_KEPT = ("kernelspec",)


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without outputs (modified in place and returned)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in CELL_METADATA_DROPPED:
            cell.metadata.pop(key, None)
    metadata = {k: nb.metadata[k] for k in NOTEBOOK_METADATA_KEPT if k in nb.metadata}
    language = nb.metadata.get("language_info", {}).get("name")
    if language:
        metadata["language_info"] = {"name": language}
    nb.metadata = nbformat.from_dict(metadata)
    return nb


def stripped_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return nbformat.writes(strip(nb)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path,
                        help="notebooks (default: notebooks/*.ipynb of this repository)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a notebook is not stripped")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((ROOT / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        text = stripped_text(path)
        if path.read_text(encoding="utf-8") != text:
            dirty.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    if args.check and dirty:
        names = ", ".join(str(p) for p in dirty)
        print(f"not stripped: {names}: run python scripts/strip_notebooks.py", file=sys.stderr)
        return 1
    for path in dirty:
        print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
