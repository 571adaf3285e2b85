"""NeMo-Run's RunContext, plus nemo_lite's checks before anything is launched.

After NeMo-Run resolves `--factory` and the `a.b=value` overrides into a Partial, the plan
(world size, layout, shapes, batch math; `nemo_lite.cli.plan`) is checked, and `--dryrun`
prints it with a per-rank memory estimate. Any bad input (unknown recipe, unknown key, bad
value, impossible layout) ends the command with one line on stderr and exit code 2, before a
process is spawned.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
import warnings
from typing import Any

import typer
from nemo_run.cli.api import RunContext

from nemo_lite.cli.peft import ENTRYPOINTS as PEFT_ENTRYPOINTS
from nemo_lite.cli.peft import check_peft_task, flags_to_overrides

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


def _target_params(config: Any) -> list[str]:
    import inspect

    import fiddle as fdl

    target = fdl.get_callable(config) if isinstance(config, fdl.Buildable) else None
    if target is None:
        return []
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [n for n, p in inspect.signature(target).parameters.items()
            if n != "self" and p.kind not in skip]


def explain(error: BaseException, factory: Any = None, entry: str = "pretrain") -> str:
    """NeMo-Run's parse errors, said in one line: which key, what is wrong, what is valid."""
    import difflib

    text = " ".join(str(error).split())
    key = re.search(r"'key': '([^']+)'", text)
    value = re.search(r"'value': '([^']*)'", text)
    unknown = re.search(r"No parameter named '([^']+)'", text)
    if key and unknown:
        parent_path = key[1].rsplit(".", 1)[0] if "." in key[1] else ""
        valid: list[str] = []
        name = _factory_name(factory)
        if name:
            from recipes import get_recipe

            node = get_recipe(name, "finetune" if entry == "finetune" else "pretrain")()
            for part in filter(None, parent_path.split(".")):
                node = getattr(node, part, None)
            valid = _target_params(node)
        close = difflib.get_close_matches(unknown[1], valid, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        listed = f" Valid keys under '{parent_path or 'the task'}': {', '.join(valid)}." if valid else ""
        return f"unknown override key '{key[1]}'.{hint}{listed}"
    expected = re.search(r"as <class '(\w+)'>", text) or re.search(r"Failed to parse '[^']*' as (\w+)", text)
    if key and value and "Failed to parse" in text:
        kind = expected[1] if expected else "the expected type"
        return f"bad value for '{key[1]}': '{value[1]}' is not a valid {kind}."
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


class LiteRunContext(RunContext):
    def parse_fn(self, fn: Any, args: list[str], **default_kwargs: Any) -> Any:
        check_factory(self.factory)
        parser_log = logging.getLogger("nemo_run.cli.cli_parser")
        level = parser_log.level
        parser_log.setLevel(logging.CRITICAL)  # its errors reach the user once, from here
        try:
            if self.yaml is not None:
                task = self._task_from_file(fn, args)
            else:
                if getattr(fn, "__name__", "") in PEFT_ENTRYPOINTS:  # --path X --output DIR
                    args = flags_to_overrides(args)
                task = super().parse_fn(fn, args, **default_kwargs)
        except Exception as error:
            from nemo_run.cli.cli_parser import CLIException

            if isinstance(error, CLIException) and getattr(self, "task_file", None) is None:
                # NeMo-Run says nothing useful about an override under a None field
                problem = none_on_the_way(super().parse_fn(fn, []), args)
                if problem:
                    raise ValueError(problem) from None
            raise
        finally:
            parser_log.setLevel(level)
        from nemo_lite.cli.plan import plan_task

        if getattr(fn, "__name__", "") in ("generate", "evaluate"):
            from nemo_lite.cli.evaluate import check_evaluate
            from nemo_lite.cli.generate import check_generate

            check = check_generate if fn.__name__ == "generate" else check_evaluate
            lines = check(dict(task.__arguments__))
            if self.dryrun:
                print("\n".join([f"nemo_lite {fn.__name__} plan:", *("  " + x for x in lines)]))
            return task
        if getattr(fn, "__name__", "") in PEFT_ENTRYPOINTS:
            lines = check_peft_task(task)
            if self.dryrun:
                print("\n".join([f"nemo_lite {fn.__name__} plan:", *("  " + x for x in lines)]))
            return task
        if "trainer" not in _target_parameters(task):  # a conversion (import / export)
            from nemo_lite.cli.convert import check_conversion

            lines = check_conversion(task)
            if self.dryrun:
                print("\n".join(["nemo_lite conversion plan:", *("  " + x for x in lines)]))
            return task
        recipe = _factory_name(self.factory)
        if recipe and getattr(task, "trainer", None) is not None:  # the run's summary names it
            task.trainer.recipe = recipe
        if self.executor is None:  # with an executor, --name names its experiment and job
            name_run_directory(task, self.name, fn, args)
        plan = plan_task(task, self.executor, check_paths=not self.dryrun)
        if self.dryrun:
            print("\n".join(["nemo_lite launch plan:", *("  " + line for line in plan.lines())]))
        return task

    def _task_from_file(self, fn: Any, args: list[str]) -> Any:
        """`--yaml FILE` (an export of --to-yaml/--to-toml/--to-json): the --factory recipe if
        given, then the file's values, then the key=value overrides."""
        from nemo_run.cli.cli_parser import parse_cli_args

        from nemo_lite.cli.task_file import TaskFileError, build_task, missing_arguments

        self.task_file, self.yaml = str(self.yaml), None
        base = super().parse_fn(fn, []) if self.factory else None
        task = build_task(self.task_file, fn, base)
        task = parse_cli_args(task, args) if args else task
        missing = missing_arguments(task)
        if missing:
            key, name = missing[0]
            raise TaskFileError(
                f"{self.task_file}: '{key}' is required by {name} and set neither in the file "
                f"nor on the command line: add it to the file or give {key}=VALUE.")
        return task

    def parse_executor(self, name: str, *args: str) -> Any:
        from nemo_lite.cli.executors import check_executor, check_executor_name

        check_executor_name(name)  # unknown names fail with the list of known executors
        return check_executor(super().parse_executor(name, *args))  # bad fields fail here

    def _execute_task(self, fn: Any, task_args: list[str]) -> None:
        from nemo_lite.cli.executors import launch_task

        if self.detach and self.executor is None:
            raise ValueError("--detach returns once a job is submitted to an executor; this run "
                             "has none. Add run.executor=slurm (or local/torchrun/docker), or "
                             "drop --detach.")
        if self.tail_logs:
            print("warning: --tail-logs: nemo_lite always shows a run's logs while it runs; "
                  "the flag changes nothing.", file=sys.stderr)

        # with an executor: checked, submitted and waited for by executors.run_and_wait
        if launch_task(self, fn, task_args):
            return
        if self.repl or any((self.to_yaml, self.to_toml, self.to_json)):
            super()._execute_task(fn, task_args)
            return
        self._run_here(fn, task_args)

    def _run_here(self, fn: Any, task_args: list[str]) -> None:
        """NeMo-Run's direct run, with its table of resolved arguments printed once: Lightning
        starts the other ranks by running this command again, and they stay quiet."""
        import nemo_run as run

        task = self.parse_fn(fn, task_args)
        if launching_process():
            run.dryrun_fn(task, executor=self.executor)
        if self.dryrun or not self._should_continue(self.skip_confirmation):
            return
        run.run(fn_or_script=task, name=self.name, executor=self.executor,
                plugins=self.plugins, direct=True, detach=self.detach)

    def cli_execute(self, fn: Any, args: list[str], entrypoint_type: str = "task") -> Any:
        # NeMo-Run's --verbose leaves one trace: torchx's logger at INFO
        verbose = logging.getLogger("torchx").level == logging.INFO
        if verbose:
            logging.getLogger("nemo_lite").setLevel(logging.INFO)
        try:
            if self.load:
                raise ValueError(
                    f"--load {self.load}: NeMo-Run 0.11 has no loader behind this option. Run "
                    "an exported config with --yaml FILE (from --to-yaml/--to-toml/--to-json), "
                    "or rebuild a run from its checkpoint with nemo_lite.io.load_context(PATH).")
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex)")
                return super().cli_execute(fn, args, entrypoint_type)
        except (typer.Exit, KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - every bad input ends in one clear line
            if verbose:
                traceback.print_exc()
            text = explain(error, self.factory, getattr(fn, '__name__', ''))
            task_file = getattr(self, "task_file", None)
            if task_file and not text.startswith(task_file):
                text = f"{task_file}: {text}"
            if launching_process():
                print(f"error: {text}", file=sys.stderr)
            elif verbose or not isinstance(error, ValueError):  # rank 0 says the same
                print(f"error: [rank {os.environ.get('RANK') or os.environ.get('LOCAL_RANK')}] "
                      f"{text}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None  # NeMo-Run turns other exits into 1


def none_on_the_way(task: Any, args: list[str]) -> str | None:
    """For an override `a.b.c=V` whose parent `a.b` is None in the task (and not set by an
    earlier override): the message that says so and how to create the parent first."""
    import typing

    import fiddle as fdl

    assigned: set[str] = set()
    for arg in args:
        key = re.split(r"[*+-]?=", arg, maxsplit=1)[0]
        parts, node = key.split("."), task
        for i, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[:i + 1])
            if prefix in assigned or not isinstance(node, fdl.Buildable):
                break
            child = getattr(node, part, None)
            if child is None:
                hint = part
                try:
                    target = fdl.get_callable(node)
                    init = target.__init__ if isinstance(target, type) else target
                    annotation = typing.get_type_hints(init).get(part)
                    classes = [a for a in typing.get_args(annotation) or (annotation,)
                               if isinstance(a, type) and a is not type(None)]
                    if classes:
                        hint = f"Config[{classes[0].__module__}.{classes[0].__qualname__}]"
                except Exception:  # noqa: BLE001 - the hint is optional
                    pass
                return (f"cannot set '{key}': '{prefix}' is None in this recipe. Create it "
                        f"first, then set its fields: {prefix}={hint} {key}=...")
            node = child
        assigned.add(key)
    return None


def launching_process() -> bool:
    """True in the process the user started (or rank 0 of torchrun); False in the rank
    processes started from it (Lightning sets LOCAL_RANK, torchrun RANK)."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0) == 0


def name_run_directory(task: Any, name: str | None, fn: Any, args: list[str]) -> None:
    """`--name NAME` of a run in this process (no executor, where NeMo-Run uses no name): the
    log directory's name (`log.name`) of a task that has a NeMoLogger, unless `log.name=` is
    given."""
    command = getattr(fn, "__name__", None)
    if not name or name == command or any(a.startswith("log.name=") for a in args):
        return
    log = getattr(task, "log", None)
    if log is not None and "name" in _target_parameters(log):
        log.name = name


def _target_parameters(config: Any) -> list[str]:
    try:
        return _target_params(config)
    except (TypeError, ValueError):
        return []
