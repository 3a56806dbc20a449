"""The way of `atomdb-migrate upgrade` from the command line to its first bulk write.

    python benchmarks/call_path.py            # the blog example, in memory

Runs the blog example's ``upgrade`` in process (a ``mongomock://`` URL, so no
server) under a profiler hook, and stops counting at the first call of the
driver's ``bulk_update``. Prints:

- the package's modules that ran code before that first write;
- the module boundaries crossed on the way: each distinct pair (caller's
  module, callee's module) of the package seen before that first write. A
  call made inside a new asyncio task counts from the task's creator only
  when it can be seen (a task's frames start at the event loop, so those
  calls count under the module that awaits the task).

A measure of the architecture (how far the data travels), not of speed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
BLOG = HERE.parent / "examples" / "blog"
sys.path.insert(0, str(BLOG))

import story  # noqa: E402

from atomdb_migrate.cli import main as cli  # noqa: E402

PACKAGE = "atomdb_migrate"


def module_of(frame: FrameType) -> str | None:
    """The package module a frame runs in (None: outside the package)."""
    name = frame.f_globals.get("__name__", "")
    return name if name == PACKAGE or name.startswith(PACKAGE + ".") else None


class Tracer:
    """Record the package's calls until the first bulk write."""

    def __init__(self) -> None:
        #: Modules that ran code, in the order they first did.
        self.modules: list[str] = []
        #: Distinct (caller module, callee module) pairs of the package.
        self.edges: list[tuple[str, str]] = []
        #: Whether the first bulk write has been reached.
        self.done = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or self.done:
            return
        here = module_of(frame)
        if here is None:
            return
        if here not in self.modules:
            self.modules.append(here)
        caller = self.caller(frame.f_back)
        if caller is not None and caller != here and (caller, here) not in self.edges:
            self.edges.append((caller, here))
        if frame.f_code.co_name == "bulk_update" and here.endswith(".mongo"):
            self.done = True

    @staticmethod
    def caller(frame: FrameType | None) -> str | None:
        """The nearest package module up the stack, unless an event loop comes first."""
        while frame is not None:
            here = module_of(frame)
            if here is not None:
                return here
            if frame.f_globals.get("__name__", "").startswith("asyncio"):
                return None
            frame = frame.f_back
        return None


def main() -> int:
    url = "mongomock://memory/call_path"
    asyncio.run(story.seed(url, 50))
    tracer = Tracer()
    options = ["--url", url, "--models", "blog_models", "--migrations", str(story.MIGRATIONS)]
    sys.setprofile(tracer)
    try:
        cli.main([*options, "upgrade", "--no-progress"], standalone_mode=False)
    finally:
        sys.setprofile(None)
    if not tracer.done:
        print("no bulk write happened")
        return 1
    short = len(PACKAGE) + 1
    print(f"modules that ran before the first bulk write: {len(tracer.modules)}")
    for name in tracer.modules:
        print(f"  {name[short:]}")
    print(f"module boundaries crossed (distinct caller -> callee): {len(tracer.edges)}")
    for caller, callee in tracer.edges:
        print(f"  {caller[short:]} -> {callee[short:]}")
    parts = {(part(a), part(b)) for a, b in tracer.edges if part(a) != part(b)}
    print(f"part boundaries crossed (distinct subpackage -> subpackage): {len(parts)}")
    for caller, callee in sorted(parts):
        print(f"  {caller} -> {callee}")
    return 0


def part(module: str) -> str:
    """The part (subpackage) a module belongs to; a top-level module is its own."""
    return module.split(".")[1] if "." in module else module


if __name__ == "__main__":
    raise SystemExit(main())
