"""The dependency rule of docs/architecture.md holds, read from the source (every import,
module-level or inside a function):

    cli/  recipes/  executors/   ->   llm/   ->   lightning/   ->   io/   ->   (base)

(base: nemo_lite/__init__.py, _lazy.py, secrets.py). Nothing imports a layer above its own,
there is no import circle between modules, and no module outside the shim registry assigns to
an attribute of torch, megatron-core or Lightning (tests/unit/test_patches.py lists those).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("nemo_lite", "recipes", "executors")
LAYERS = {"base": 0, "io": 1, "lightning": 2, "llm": 3, "top": 4}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] in ("recipes", "executors"):
        return "top"
    if len(parts) == 1 or parts[1] in ("_lazy", "secrets"):
        return "base"
    return {"io": "io", "lightning": "lightning", "llm": "llm", "cli": "top"}[parts[1]]


def sources() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports(path: Path, module: str) -> set[str]:
    """The project modules `path` imports (resolved to modules that exist)."""
    known = sources()
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.split(".")[0] in PACKAGES:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module: imports(path, module) for module, path in sources().items()}


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(f"{source} ({layer(source)}) imports {target} ({layer(target)})"
                    for source, targets in graph().items() for target in targets
                    if LAYERS[layer(target)] > LAYERS[layer(source)])
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = graph()
    # a package __init__ re-exporting its own modules is not a circle through them
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [node, target]))
            elif target not in state:
                visit(target, stack + [node] if node not in stack else stack)
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(cycles)


FOREIGN = ("torch", "megatron", "lightning")
REGISTRY = {"nemo_lite.lightning._cpu", "nemo_lite.lightning._cpu_moe",
            "nemo_lite.lightning.shims", "nemo_lite.lightning.launcher_cleanup",
            "nemo_lite.lightning.torchmetrics_imports", "nemo_lite.lightning.writer_queue"}


def test_only_the_shim_registry_assigns_to_torch_megatron_or_lightning():
    offenders = []
    for module, path in sources().items():
        if module in REGISTRY:
            continue
        tree = ast.parse(path.read_text())
        foreign = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                foreign |= {(a.asname or a.name).split(".")[0] for a in node.names
                            if a.name.split(".")[0] in FOREIGN}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FOREIGN:
                foreign |= {a.asname or a.name for a in node.names}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
                targets = [ast.Attribute(value=node.args[0], attr="?")] if node.args else []
            for target in targets:
                base = target
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(target, ast.Attribute) and isinstance(base, ast.Name) \
                        and base.id in foreign:
                    offenders.append(f"{module}:{node.lineno} assigns to {ast.unparse(target)}")
    assert not offenders, "\n".join(offenders)


def test_recipes_reach_llm_through_entry_points_only():
    """`llm.<recipe>` (NeMo's name) without llm importing the recipes package: every recipe
    is declared in the `nemo_lite.recipes` entry-point group, and only those."""
    from nemo_lite import llm
    from recipes import list_recipes

    assert sorted(llm._recipe_modules()) == sorted(list_recipes())
    assert all(value == f"recipes.{name}" for name, value in llm._recipe_modules().items())
    assert llm.tiny_gpt.pretrain_recipe.__module__ == "recipes.tiny_gpt"


def test_the_circle_check_finds_circles(monkeypatch):
    fake = {"nemo_lite.llm.a": {"nemo_lite.llm.b"}, "nemo_lite.llm.b": {"nemo_lite.llm.a"}}
    monkeypatch.setattr(__import__(__name__, fromlist=["graph"]), "graph", lambda: fake)
    try:
        test_no_import_circles()
    except AssertionError as error:
        assert "nemo_lite.llm.a" in str(error)
    else:
        raise AssertionError("a circle went unnoticed")
