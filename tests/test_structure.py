"""The package's shape: subpackages in ranks, no import cycle, one subpackage
that knows the drivers.

Every import counts: at module level, inside functions, and under
``TYPE_CHECKING``. docs/architecture.md explains the ranks.

"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "atomdb_migrate"
ROOT = PACKAGE.name

#: Each subpackage's rank, bottom to top. A module may import from its own
#: subpackage and from any subpackage of a lower rank, and nothing else
#: (`exceptions` excepted: the one exception tree is below everything).
RANKS = {
    "core": 0,
    "operations": 1,
    "steps": 2,
    "queries": 3,
    "schema": 3,
    "driver": 4,
    "model": 5,
    "engine": 6,
    "autogenerate": 7,
    "commands": 8,
    "cli": 9,
}

#: Imports the ranks alone would refuse, each allowed on purpose.
ALLOWED: dict[tuple[str, str], str] = {
    # A declared index's keys are compared with the query rules' `equal`
    # (BSON-exact, as the server compares them); both are rank 3, without I/O.
    ("schema", "queries"): "indexes compare keys with matching.equal",
}

#: What the command line may import besides itself: the commands (which
#: re-export, or wrap, what it needs from below them) and the exception tree.
CLI_IMPORTS = {"cli", "commands", "exceptions"}

#: Modules at the top of the package: `exceptions` (a package below
#: everything, importing nothing else of the package), the public facades
#: and the one-line shims of the old flat layout (above everything; nothing
#: in a subpackage may import them).
BOTTOM = {"exceptions"}

#: Only these subpackages do I/O (talk to the server, read files or the
#: environment); ranks 0-4 but the driver do none.
NO_IO = {name for name, rank in RANKS.items() if rank <= 4 and name != "driver"}


def module_name(path: Path) -> str:
    """The dotted name of a module of the package, from its file."""
    parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """The package's modules a module imports, anywhere in it."""
    me = module_name(path).split(".")
    here = me if path.name == "__init__.py" else me[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == ROOT)
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[: len(here) - node.level + 1]
            target = ".".join([*base, *([node.module] if node.module else [])])
        elif node.module and node.module.split(".")[0] == ROOT:
            target = node.module
        else:
            continue
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.add(sub if sub in MODULES else target)
    found.discard(module_name(path))
    return {m for m in found if m in MODULES}


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def part(module: str) -> str:
    """The subpackage a module belongs to, or its own name at the top."""
    return module.split(".")[1] if module != ROOT else ROOT


def in_subpackage(module: str) -> bool:
    return module != ROOT and part(module) in RANKS


def test_every_subpackage_has_a_rank() -> None:
    folders = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert folders == set(RANKS) | BOTTOM


def test_imports_go_down_the_ranks() -> None:
    wrong = []
    for name, targets in GRAPH.items():
        if not in_subpackage(name):
            continue
        mine = part(name)
        for target in targets:
            theirs = part(target)
            if theirs == mine or theirs in BOTTOM:
                continue
            if not in_subpackage(target):
                wrong.append(f"{name} -> {target} (a top-level module)")
            elif RANKS[theirs] > RANKS[mine] or (
                RANKS[theirs] == RANKS[mine] and (mine, theirs) not in ALLOWED
            ):
                wrong.append(f"{name} -> {target}")
    assert wrong == []


def test_the_command_line_imports_only_the_commands() -> None:
    reached = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if in_subpackage(name) and part(name) == "cli"
        for target in targets
        if part(target) not in CLI_IMPORTS
    )
    assert reached == []


def test_the_exceptions_and_the_core_import_nothing_above() -> None:
    for name, targets in GRAPH.items():
        if part(name) in BOTTOM:
            assert {part(t) for t in targets} <= BOTTOM, name
        if in_subpackage(name) and part(name) == "core":
            assert {part(t) for t in targets} <= {"core", "exceptions"}, name


def test_no_cycle_between_subpackages() -> None:
    edges = {
        (part(a), part(b))
        for a, targets in GRAPH.items()
        for b in targets
        if in_subpackage(a) and in_subpackage(b) and part(a) != part(b)
    }
    assert not {(a, b) for a, b in edges if (b, a) in edges}
    assert [f"{a} -> {b}" for a, b in edges if (a, b) in ALLOWED] == [
        f"{a} -> {b}" for a, b in ALLOWED
    ], "every allowed exception is still needed"


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycles: list[list[str]] = []

    def walk(name: str, path: list[str]) -> None:
        for other in sorted(GRAPH[name]):
            if other in path:
                cycles.append([*path[path.index(other) :], other])
            else:
                walk(other, [*path, other])

    for name in sorted(GRAPH):
        walk(name, [name])
    assert cycles == []
    assert f"{ROOT}.model.versioned" not in GRAPH[f"{ROOT}.steps.registry"], (
        "the registry announces; the model listens"
    )


def test_the_shims_of_the_old_paths_hold_only_imports() -> None:
    """A shim re-exports its module (one star import), and a former name
    under its old spelling where one was renamed; nothing else."""
    for name, path in MODULES.items():
        if name.count(".") != 1 or part(name) in RANKS or part(name) in BOTTOM:
            continue
        if part(name) in {"ops", "testing"}:
            continue
        code = [
            line
            for line in path.read_text().split('"""')[-1].splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert all(line.startswith("from .") for line in code), name
        assert sum(line.endswith("import *  # noqa: F403") for line in code) == 1, name
        assert len(code) <= 2, name


def test_ranks_without_io_open_no_files_and_no_connections() -> None:
    io = re.compile(r"\b(open|read_text|write_text|os\.environ|getenv|subprocess)\b")
    found = {
        name: sorted(set(io.findall(_code(path))))
        for name, path in MODULES.items()
        if in_subpackage(name) and part(name) in NO_IO and io.search(_code(path))
    }
    assert found == {}


def _code(path: Path) -> str:
    """A module's code without comments and strings."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.unparse(tree)


def test_only_the_driver_subpackage_knows_the_drivers() -> None:
    drivers = re.compile(r"\b(mongomock\w*|motor\w*|AsyncMongoClient|MongoClient)\b")
    found = {}
    for name, path in MODULES.items():
        if part(name) == "driver" or name == ROOT:
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
