"""Build the two evaluation tasks nemo_lite ships, from Python's standard library (offline).

    python -m nemo_lite.llm.evaluation.build_tasks     # rewrites tasks/*.jsonl

* `nemo_lite_stdlib_next_line` (multiple choice): three consecutive code lines of a stdlib
  module, then four candidate next lines: the true one and three next lines from elsewhere.
* `nemo_lite_stdlib_docs` (perplexity): stdlib module docstrings, scored whole
  (`loglikelihood_rolling`: word / byte perplexity, bits per byte).

The files are built once and shipped (the stdlib differs between Python versions, the tasks must
not); the choice of lines is seeded, so a rebuild on the same Python gives the same files.
"""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from pathlib import Path

TASKS = Path(__file__).parent / "tasks"
MODULES = ("textwrap", "string", "fractions", "heapq", "bisect", "shlex", "csv",
           "calendar", "difflib", "statistics", "fnmatch", "glob", "copy", "pprint", "queue",
           "sched", "colorsys", "contextlib", "dataclasses", "graphlib", "numbers", "random",
           "secrets", "tempfile", "uuid", "zipapp", "weakref", "enum", "functools")


def _code_lines(source: str) -> list[str]:
    return [line.rstrip() for line in source.splitlines()]


def _is_plain(line: str) -> bool:
    text = line.strip()
    return 12 <= len(text) <= 70 and not text.startswith(("#", '"""', "'''", "@")) \
        and line.isascii()


def next_line_rows(count: int = 60, seed: int = 0) -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    rng = random.Random(seed)
    candidates = []  # (context, true next line)
    for name in MODULES:
        lines = _code_lines((stdlib / f"{name}.py").read_text())
        for i in range(3, len(lines)):
            window = lines[i - 3:i + 1]
            if all(_is_plain(line) for line in window):
                candidates.append(("\n".join(window[:3]) + "\n", window[3]))
    rng.shuffle(candidates)
    chosen, nexts = candidates[:count], [c[1] for c in candidates[count:]]
    rows = []
    for context, answer in chosen:
        wrong = rng.sample([line for line in nexts if line != answer], 3)
        choices = wrong + [answer]
        rng.shuffle(choices)
        rows.append({"context": context, "choices": choices, "answer": choices.index(answer)})
    return rows


def docs_rows(count: int = 30) -> list[dict]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    rows = []
    for name in MODULES:
        doc = ast.get_docstring(ast.parse((stdlib / f"{name}.py").read_text()))
        if doc and 80 <= len(doc) and doc.isascii():
            rows.append({"module": name, "text": doc[:1500]})
    return rows[:count]


def main() -> None:
    for name, rows in (("stdlib_next_line.jsonl", next_line_rows()),
                       ("stdlib_docs.jsonl", docs_rows())):
        (TASKS / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        print(f"{TASKS / name}: {len(rows)} documents")


if __name__ == "__main__":
    main()
