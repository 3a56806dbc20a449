"""The one exception tree: as drawn in `atomdb_migrate.exceptions`' docstring,
named ``atomdb_migrate.exceptions.X`` and importable from there and from the
package, whichever module of `atomdb_migrate/exceptions/` writes it.

"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import atomdb_migrate
from atomdb_migrate import exceptions

#: A line of the drawing: its indent (the tree's depth) and the class named.
LINE = re.compile(r"^(?P<indent>[ │]*)(?:├── |└── )(?P<name>[A-Z]\w+Error)\b")


ERRORS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def drawn_tree(text: str | None = exceptions.__doc__) -> dict[str, str | None]:
    """Each class drawn (in the docstring's first drawing), with the class drawn as its parent."""
    assert text is not None
    drawing = text.split("```")[1]
    parents: dict[str, str | None] = {"MigrateError": None}
    stack: list[tuple[int, str]] = [(-1, "MigrateError")]
    for line in drawing.splitlines():
        found = LINE.match(line)
        if not found:
            continue
        depth = len(found["indent"])
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[found["name"]] = stack[-1][1] if stack else None
        stack.append((depth, found["name"]))
    return parents


def the_classes() -> dict[str, type]:
    return {
        name: value
        for name, value in vars(exceptions).items()
        if isinstance(value, type) and issubclass(value, exceptions.MigrateError)
    }


def test_the_drawing_is_the_tree() -> None:
    drawn = drawn_tree()
    classes = the_classes()
    assert set(drawn) == set(classes)
    for name, parent in drawn.items():
        ours = [b for b in classes[name].__bases__ if issubclass(b, exceptions.MigrateError)]
        bases = [b.__name__ for b in ours]
        assert bases == ([parent] if parent else []), name


def test_docs_errors_draws_the_same_tree() -> None:
    assert drawn_tree(ERRORS_PAGE.read_text()) == drawn_tree()


def test_each_class_is_named_and_imported_as_one_module_of_the_tree() -> None:
    for name, cls in {**the_classes(), "LegacyQueryWarning": exceptions.LegacyQueryWarning}.items():
        assert cls.__module__ == "atomdb_migrate.exceptions", name
        assert name in exceptions.__all__
        assert getattr(atomdb_migrate, name, cls) is cls
    error = pickle.loads(pickle.dumps(exceptions.ConfigError("no models")))
    assert type(error) is exceptions.ConfigError and str(error) == "no models"


def test_the_helpers_are_still_imported_from_the_tree() -> None:
    from atomdb_migrate.exceptions import MAX_SHOWN, shared_key, short_repr, shorten

    assert len(shorten("x" * (MAX_SHOWN + 10))) > MAX_SHOWN
    assert short_repr("abc") == "'abc'"
    assert "share" in shared_key({"email": "a"}, [1, 2])
