"""Wall times worth reading in CI's log (a job from command to exit, a daemon's start), listed
after the run by tests/conftest.py. They travel in each test's report (pytest's
`record_property`), which pytest-xdist carries from its workers to the process that prints."""

from __future__ import annotations

from collections.abc import Callable

KEY = "wall_time"
# measured by session fixtures (which have no report): the next test that uses them reports them
PENDING: list[str] = []


def line(what: str, seconds: float) -> str:
    return f"{seconds:6.1f} s  {what}"


def record(record_property: Callable[[str, object], None], what: str, seconds: float) -> None:
    record_property(KEY, line(what, seconds))


def flush_pending(record_property: Callable[[str, object], None]) -> None:
    while PENDING:
        record_property(KEY, PENDING.pop(0))
