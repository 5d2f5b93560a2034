"""The package's modules import each other in one direction only: no cycle, even through an import hidden
inside a function.

Every ``import`` statement of every ``.py`` under ``attribution/`` counts, at module level and inside
functions, relative or absolute, except those under ``if TYPE_CHECKING:`` (never run, so they import
nothing). Edges of the graph:

- ``import attribution.a.b`` and ``from attribution.a import name`` / ``from .a import name``: the module
  ``attribution.a`` (a package means its ``__init__``);
- ``from .a import b`` where ``b`` is a submodule: the submodule ``attribution.a.b`` (and ``attribution.a``
  too when other names come from the package itself).

Python also runs a package's ``__init__`` before any of its submodules; that implicit step is no edge
here. The lazy ``__init__`` files (``attribution``, ``attribution.verification``: PEP 562
``__getattr__`` with ``importlib.import_module``) import nothing when they run, so they cannot close a
loop; their lookups happen on attribute access, are no import statement, and sit above every submodule
(a facade, like the CLI). The eager ones (``heads``, ``backbones``) import their own submodules, so an
edge from a submodule back to its package (``from . import HEADS`` in ``heads/open_set.py``) would be a
real cycle, and is one here.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = "attribution"
# The layers of the package, bottom first: a module imports modules of its own layer or of those below, never
# of one above (a subpackage is one unit: ``heads.open_set`` is ``heads``). The package ``__init__`` (the lazy
# facade) is above them all.
LAYERS = [
    {"constants", "names", "outputs", "provenance"},  # names, numbers and output records
    {"storage"},  # writes, locks, the zoo folders
    {"persistence"},  # saved formats, what a folder is, resolving references
    {"heads", "backbones", "transform", "inputs", "duplicates", "enrollment", "dataset", "changes", "caveats",
     "reading", "evidence", "report"},  # report: the renderer of rows, on the same layer as what it renders with
    {"features", "training", "recipes"},
    {"zoo", "head_folder"},
    {"verification"},
    {"pipeline"},
    {"batch", "cli", "__main__"},
]


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of the package."""
    root = REPO / PACKAGE
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, but those under ``if TYPE_CHECKING:``."""
    found = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules that module ``name`` (file ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = package.split(".")
        if node.level:
            base = base[:len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
        submodules = {f"{source}.{alias.name}" for alias in node.names} & modules
        targets.update(submodules)
        if len(submodules) < len(node.names):
            targets.add(source)
    return {t for t in targets if t in modules}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of ``module`` (``len(LAYERS)`` for the package itself)."""
    if module == PACKAGE:
        return len(LAYERS)
    unit = module.split(".")[1]
    found = [i for i, layer in enumerate(LAYERS) if unit in layer]
    assert found, f"{module} is in no layer: add {unit!r} to LAYERS in {Path(__file__).name}"
    return found[0]


def test_the_graph_sees_imports_inside_functions_and_submodules():
    graph = import_graph()
    assert "attribution.backbones.clip" in graph["attribution.backbones"]  # imported inside create_backbone
    assert "attribution.zoo" in graph["attribution.cli"]  # ``from . import zoo`` inside a command
    assert "attribution.verification.base" not in graph["attribution.verification"]  # TYPE_CHECKING only


def test_find_cycle_reports_the_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
    assert not upward, "imports of a layer above: " + "; ".join(upward)
