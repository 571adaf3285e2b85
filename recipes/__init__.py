"""Recipes: ready-made training jobs as lazy Fiddle trees (NeMo 2.0's recipe style).

Each recipe module has `pretrain_recipe()` and `finetune_recipe()`, returning a
`nemo_run.Partial` of `llm.pretrain` / `llm.finetune` whose every piece (model, trainer,
strategy, data, optimizer, logger, resume) is a `nemo_run.Config`: nothing is built until the
job runs, so any field can be changed first. The pieces come from small factories
(`recipes.trainer`, `recipes.optim`, `recipes.data`, `recipes.log`) that recipes share.

This module imports nothing heavy: listing recipes costs nothing, a recipe module is imported
only when asked for.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import nemo_run as run

# Recipe modules, in the order they are listed (smallest first).
RECIPES: tuple[str, ...] = ("tiny_gpt", "gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b")
KINDS: tuple[str, ...] = ("pretrain", "finetune")


def list_recipes() -> list[str]:
    """Names of the recipe modules (`recipes.<name>`), without importing them."""
    return list(RECIPES)


def get_recipe(name: str, kind: str = "pretrain") -> Callable[..., run.Partial]:
    """The `<kind>_recipe` factory of recipe `name` (e.g. `get_recipe("llama3_8b")()`).

    Raises ValueError naming the closest recipes for an unknown name ("llama3-8b" and
    "llama3_8b" are the same name).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown recipe kind {kind!r}: choose one of {', '.join(KINDS)}.")
    key = name.strip().replace("-", "_")
    if key not in RECIPES:
        close = difflib.get_close_matches(key, RECIPES, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown recipe {name!r}.{hint} Available recipes: {', '.join(RECIPES)}.")
    module: Any = importlib.import_module(f"{__name__}.{key}")
    return getattr(module, f"{kind}_recipe")
