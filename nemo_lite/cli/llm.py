"""`nemo llm ...`: nemo_lite's entrypoints and recipe factories, registered with NeMo-Run.

NeMo-Run loads this module through the `nemo_run.cli` entry-point group (pyproject.toml), so
its own `nemo` command and nemo_lite's `nemo-lite` both get `llm pretrain | finetune |
validate --factory NAME`. Recipes are registered by name only: a recipe module is imported
when its factory is called, not when the CLI starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import fiddle as fdl
import nemo_run as run

from nemo_lite.cli import (
    evaluate,
    executors,  # noqa: F401 - registers the run.executor=NAME factories
    generate,
)
from nemo_lite.cli.run_context import LiteRunContext
from nemo_lite.lightning.quiet import quiet_command
from nemo_lite.llm import api
from recipes.data import mock_data, pretraining_data
from recipes.sft_data import finetuning_data

ENTRYPOINTS = {"pretrain": api.pretrain, "finetune": api.finetune, "validate": api.validate}
RECIPE_KINDS = {"pretrain": "pretrain", "finetune": "finetune", "validate": "pretrain"}


class LazyRecipe:
    """A recipe factory known by name; its module is imported only when it is called, or when
    NeMo-Run reads its signature to parse `--factory "NAME(arg=value)"`."""

    def __init__(self, name: str, kind: str, entrypoint: str) -> None:
        self.name, self.kind, self.entrypoint = name, kind, entrypoint
        self.__name__ = self.__qualname__ = name
        self.__module__ = __name__
        self.__doc__ = f"recipes.{name}.{kind}_recipe (imported when used)"
        # NeMo-Run's help shows each factory's source line: point it at this class's code
        # (inspect.signature stops earlier, at __signature__, so it still sees the recipe's)
        self.__wrapped__ = LazyRecipe.__call__

    def _recipe(self) -> Callable[..., run.Partial]:
        from recipes import get_recipe

        return get_recipe(self.name, self.kind)

    @property
    def __signature__(self) -> inspect.Signature:  # noqa: PLW3201 - read by inspect
        return inspect.signature(self._recipe())

    def __call__(self, *args: Any, **kwargs: Any) -> run.Partial:
        recipe = self._recipe()(*args, **kwargs)
        if self.entrypoint == "validate":
            fdl.update_callable(recipe, api.validate)  # the pretraining pieces, validation only
        return recipe


class LazyModel:
    """`recipes.<name>.model()` (the recipe's model config), imported when called."""

    def __init__(self, name: str) -> None:
        self.name = self.__name__ = self.__qualname__ = name
        self.__module__ = __name__
        self.__doc__ = f"recipes.{name}.model() (imported when used)"
        self.__wrapped__ = LazyModel.__call__  # NeMo-Run's help reads a factory's source line
        self.__signature__ = inspect.Signature()  # called with no arguments

    def __call__(self) -> run.Config:
        import importlib

        return importlib.import_module(f"recipes.{self.name}").model()


def register() -> None:
    from nemo_lite.llm.hf import convert, export
    from nemo_lite.llm.peft import hf_adapter, merged_checkpoint
    from recipes import list_recipes

    for name, fn in (("import", convert.import_ckpt), ("export", export.export_ckpt)):
        if getattr(fn, "cli_entrypoint", None) is None:  # NeMo 2.0's `nemo llm import/export`
            run.cli.entrypoint(name=name, namespace="llm", run_ctx_cls=LiteRunContext)(fn)
    for name, fn in (("merge", merged_checkpoint.merge_lora), ("export", hf_adapter.export_lora)):
        if getattr(fn, "cli_entrypoint", None) is None:  # `nemo llm peft merge | export`
            run.cli.entrypoint(name=name, namespace="llm.peft", run_ctx_cls=LiteRunContext)(fn)
    if getattr(generate.generate, "cli_entrypoint", None) is None:  # `nemo llm generate`
        run.cli.entrypoint(name="generate", namespace="llm", run_ctx_cls=LiteRunContext,
                           default_factory=generate.generate_defaults)(generate.generate)
    if getattr(evaluate.evaluate, "cli_entrypoint", None) is None:  # `nemo llm evaluate`
        run.cli.entrypoint(name="evaluate", namespace="llm", run_ctx_cls=LiteRunContext,
                           default_factory=evaluate.evaluate_defaults)(evaluate.evaluate)
    for entry, fn in ENTRYPOINTS.items():
        if getattr(fn, "cli_entrypoint", None) is None:
            run.cli.entrypoint(namespace="llm", run_ctx_cls=LiteRunContext)(fn)
        for name in list_recipes():
            run.cli.factory(target=fn, name=name)(LazyRecipe(name, RECIPE_KINDS[entry], entry))
    # `data=NAME` on the command line swaps a recipe's data module. The overrides are parsed
    # against the recipe's Partial, where NeMo-Run looks factories up by the parameter's
    # annotation: the api's `data: Any` (Lightning stays unimported at start-up).
    for data_factory in (mock_data, pretraining_data, finetuning_data):
        run.cli.factory(target=Any, name=data_factory.__name__)(data_factory)
    # `model=llama3_8b` (import's model argument): each recipe's model config, by recipe name
    for name in list_recipes():
        run.cli.factory(target=Any, name=name)(LazyModel(name))


quiet_command()
register()
