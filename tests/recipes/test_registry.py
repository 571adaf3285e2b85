"""Finding recipes: the registry, close-name suggestions, `llm.<recipe>`, and light imports."""

import subprocess
import sys

import pytest

import recipes

EXPECTED = ["tiny_gpt", "gpt_126m", "llama3_8b", "llama3_70b", "mixtral_8x7b"]


def test_list_recipes_names_every_recipe_module():
    assert recipes.list_recipes() == EXPECTED


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_get_recipe_returns_the_module_factory(kind):
    import recipes.llama3_8b as module

    assert recipes.get_recipe("llama3_8b", kind) is getattr(module, f"{kind}_recipe")
    assert recipes.get_recipe("llama3-8b", kind) is getattr(module, f"{kind}_recipe")


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(ValueError) as error:
        recipes.get_recipe("llama3_8")
    message = str(error.value)
    assert "unknown recipe 'llama3_8'" in message
    assert "Did you mean 'llama3_8b'" in message
    assert "tiny_gpt" in message  # the full list


def test_unknown_recipe_without_close_names_lists_all():
    with pytest.raises(ValueError, match="Available recipes: tiny_gpt, gpt_126m"):
        recipes.get_recipe("bert")


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="choose one of pretrain, finetune"):
        recipes.get_recipe("tiny_gpt", "evaluate")


def test_llm_resolves_recipe_modules_as_in_nemo():
    from nemo_lite import llm

    recipe = llm.llama3_8b.pretrain_recipe()
    assert recipe.__fn_or_cls__ is llm.pretrain
    assert "mixtral_8x7b" in dir(llm)
    with pytest.raises(AttributeError):
        llm.not_a_recipe  # noqa: B018


def _loaded_after(code: str) -> str:
    probe = (f"import sys\n{code}\n"
             "heavy = ('torch', 'lightning', 'megatron.core', 'nemo_run', 'fiddle',"
             " 'recipes.tiny_gpt')\n"
             "print(','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_listing_recipes_imports_nothing_heavy():
    assert _loaded_after("import recipes; recipes.list_recipes()") == ""


def test_llm_import_and_its_dir_stay_light():
    assert _loaded_after("from nemo_lite import llm; dir(llm)") == ""
