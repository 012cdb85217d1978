"""The package's layers import only downward, and no module imports itself back through a cycle.

The layers, lowest first, are the package's folders (ARCHITECTURE.md draws them). A module may import
from its own layer and the layers below; a front end (``pytest_plugin``, ``cli``) may not import the
other front end.
"""

from __future__ import annotations

import ast
from pathlib import Path

from repo_files import REPO

PACKAGE = REPO / "pytest_layercheck"

#: Folder (or top-level module) -> layer rank. Equal ranks may import each other, but without cycles.
LAYERS: dict[str, int] = {
    "_version": 0,
    "core": 0,
    "data": 1,
    "suites": 1,
    "model": 2,
    "scoring": 3,
    "evaluation": 4,
    "report": 5,
    "analysis": 6,
    "pytest_plugin": 7,
    "cli": 7,
    "__main__": 8,  # ``python -m pytest_layercheck``: the command's entry, above both front ends
}
FRONT_ENDS = {"pytest_plugin", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _nodes(tree: ast.AST, runtime_only: bool) -> list[ast.AST]:
    """Every node, lazy imports included; with ``runtime_only``, not those under ``if TYPE_CHECKING:``
    (annotations only: they never run, so they cannot form an import cycle)."""
    found: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        found.append(node)
        if runtime_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def imports_of(path: Path, runtime_only: bool = False) -> set[str]:
    """Every pytest_layercheck module ``path`` imports, at any depth of the file (lazy imports count)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8")), runtime_only):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                names = [f"{target}.{alias.name}" for alias in node.names]
            else:
                target, names = node.module or "", [f"{node.module}.{alias.name}" for alias in node.names]
            found |= {n for n in [target, *names] if n.startswith("pytest_layercheck")}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pytest_layercheck")}
    return found


def graph(runtime_only: bool = False) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        # "from .x import y" names module x.y when y is a submodule, else module x.
        edges[name] = {target for target in imports_of(path, runtime_only) if target in modules and target != name}
    return edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_sits_in_a_layer() -> None:
    unplaced = sorted(m for m in graph() if layer_of(m) not in LAYERS and layer_of(m) != "__init__")
    assert not unplaced, f"modules outside the layer folders: {unplaced}"


def test_imports_only_go_down() -> None:
    upward = []
    for module, targets in graph().items():
        source = layer_of(module)
        if source == "__init__":
            continue  # the package root declares the public API: it may import any layer
        for target in targets:
            goal = layer_of(target)
            if goal == "__init__":
                upward.append(f"{module} -> {target} (the package root re-exports; import the defining module)")
            elif LAYERS[goal] > LAYERS[source] or (source in FRONT_ENDS and goal in FRONT_ENDS and goal != source):
                upward.append(f"{module} ({source}) -> {target} ({goal})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_there_are_no_import_cycles() -> None:
    edges = graph(runtime_only=True)
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    packages = {m for m in edges if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    # A package's __init__ re-exporting its own submodules is not a cycle between modules.
    real = [
        c
        for c in cycles
        if not any(
            a in packages and b.startswith(a + ".") or b in packages and a.startswith(b + ".") for a, b in zip(c, c[1:])
        )
    ]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)
