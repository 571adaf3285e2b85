"""`nemo llm ...`: nemo_lite's entrypoints and recipe factories, registered with NeMo-Run.

NeMo-Run loads this module through the `nemo_run.cli` entry-point group (pyproject.toml), so
its own `nemo` command and nemo_lite's `nemo-lite` both get `llm pretrain | finetune |
validate --factory NAME`. Recipes are registered by name only: a recipe module is imported
when its factory is called, not when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nemo_run as run

from nemo_lite.cli.run_context import LiteRunContext
from nemo_lite.llm import api

ENTRYPOINTS = {"pretrain": api.pretrain, "finetune": api.finetune, "validate": api.validate}
RECIPE_KINDS = {"pretrain": "pretrain", "finetune": "finetune", "validate": "pretrain"}


def _lazy_recipe(name: str, kind: str) -> Callable[..., Any]:
    def factory(*args: Any, **kwargs: Any) -> run.Partial:
        from recipes import get_recipe

        recipe = get_recipe(name, kind)(*args, **kwargs)
        if kind == "pretrain" and ENTRYPOINTS.get(factory.entrypoint) is api.validate:
            recipe.__fn_or_cls__ = api.validate  # same pieces, validation only
        return recipe

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"recipes.{name}.{kind}_recipe (imported when used)"
    return factory


def register() -> None:
    from recipes import list_recipes

    for entry, fn in ENTRYPOINTS.items():
        if getattr(fn, "cli_entrypoint", None) is None:
            run.cli.entrypoint(namespace="llm", run_ctx_cls=LiteRunContext)(fn)
        for name in list_recipes():
            factory = _lazy_recipe(name, RECIPE_KINDS[entry])
            factory.entrypoint = entry
            run.cli.factory(target=fn, name=name)(factory)


register()
