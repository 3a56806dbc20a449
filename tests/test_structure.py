"""The package's shape: no import cycle, one module that knows the drivers.

Every import counts: at module level, inside functions, and under
``TYPE_CHECKING``.

"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "atomdb_migrate"
MODULES = {p.stem: p for p in PACKAGE.glob("*.py")}


def imports(path: Path) -> set[str]:
    """The package's modules a module imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
        elif node.module and node.module.split(".")[0] == "atomdb_migrate":
            parts = node.module.split(".")
            names = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
        else:
            continue
        found.update(n.split(".")[0] for n in names if n.split(".")[0] in MODULES)
    found.discard(path.stem)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = {name: imports(path) for name, path in MODULES.items()}
    cycles: list[list[str]] = []

    def walk(name: str, path: list[str]) -> None:
        for other in sorted(graph[name]):
            if other in path:
                cycles.append([*path[path.index(other) :], other])
            else:
                walk(other, [*path, other])

    for name in sorted(graph):
        walk(name, [name])
    assert cycles == []
    assert "model" not in graph["registry"], "the registry announces; the model listens"


def test_only_the_driver_module_knows_the_drivers() -> None:
    drivers = re.compile(r"\b(mongomock\w*|motor\w*|AsyncMongoClient|MongoClient)\b")
    found = {}
    for name, path in MODULES.items():
        if name in ("mongo", "__init__"):
            continue
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        tree = ast.parse(code)
        strings = {
            id(n)
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        }
        names = [
            n.id if isinstance(n, ast.Name) else n.attr
            for n in ast.walk(tree)
            if isinstance(n, (ast.Name, ast.Attribute)) and id(n) not in strings
        ]
        modules = [
            a.name
            for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in n.names
        ] + [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        hits = sorted({x for x in [*names, *modules] if drivers.search(x)})
        if hits:
            found[name] = hits
    assert found == {}
