"""NeMo-Run's RunContext, plus nemo_lite's checks before anything is launched.

After NeMo-Run resolves `--factory` and the `a.b=value` overrides into a Partial, the plan
(world size, layout, shapes, batch math; `nemo_lite.cli.plan`) is checked, and `--dryrun`
prints it with a per-rank memory estimate. Any bad input (unknown recipe, unknown key, bad
value, impossible layout) ends the command with one line on stderr and exit code 2, before a
process is spawned.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import typer
from nemo_run.cli.api import RunContext

EXIT_BAD_INPUT = 2


def _factory_name(factory: Any) -> str | None:
    if not isinstance(factory, str):
        return None
    match = re.match(r"\s*([A-Za-z_][\w\-]*)", factory)
    return match[1] if match else None


def check_factory(factory: Any) -> None:
    """An unknown recipe name fails with the closest names, before NeMo-Run's lookup."""
    from recipes import get_recipe, list_recipes

    name = _factory_name(factory)
    if name is None or "." in str(factory).split("(")[0]:
        return
    if name.replace("-", "_") not in list_recipes():
        get_recipe(name)  # raises ValueError with suggestions


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if not isinstance(error, ValueError) else text


class LiteRunContext(RunContext):
    def parse_fn(self, fn: Any, args: list[str], **default_kwargs: Any) -> Any:
        check_factory(self.factory)
        parser_log = logging.getLogger("nemo_run.cli.cli_parser")
        level = parser_log.level
        parser_log.setLevel(logging.CRITICAL)  # its errors reach the user once, from here
        try:
            task = super().parse_fn(fn, args, **default_kwargs)
        finally:
            parser_log.setLevel(level)
        from nemo_lite.cli.plan import plan_task

        plan = plan_task(task, self.executor)
        if self.dryrun:
            print("\n".join(["nemo_lite launch plan:", *("  " + line for line in plan.lines())]))
        return task

    def cli_execute(self, fn: Any, args: list[str], entrypoint_type: str = "task") -> Any:
        try:
            return super().cli_execute(fn, args, entrypoint_type)
        except (typer.Exit, KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - every bad input ends in one clear line
            print(f"error: {one_line(error)}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None  # NeMo-Run turns other exits into 1
