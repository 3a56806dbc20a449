"""Where the lazy upgrade's time goes: the pieces of `upgrade_state`, 2 steps behind.

    python benchmarks/profile_restore.py          # each piece timed alone
    python benchmarks/profile_restore.py --tree   # pyinstrument, 100,000 restores

Pieces timed alone miss what they share with the restore around them (the
coroutine frames, the caches); for where the time goes, sample the whole
restore with a profiler that sees C calls, e.g.
``py-spy record -r 2000 -f raw -o out.txt -- python benchmarks/profile_restore.py --loop``.

In process, with the documents and trivial steps of ``bench_restore.py``.

"""

from __future__ import annotations

import asyncio
import sys
import time
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_restore  # noqa: E402
from atomdb.nosql import NoSQLModelManager  # noqa: E402
from mongomock_motor import AsyncMongoMockClient  # noqa: E402

from atomdb_migrate import MigrationRegistry  # noqa: E402
from atomdb_migrate.core.documents import LazyCopy, StepDocument, copy_document  # noqa: E402
from atomdb_migrate.model.reads import read_chain  # noqa: E402
from atomdb_migrate.steps.versions import parse_version, run_chain  # noqa: E402

N = 200_000


def micro(fn: object) -> float:
    return timeit.timeit(fn, number=N) / N * 1e6  # type: ignore[arg-type]


async def per_call(make: object) -> float:
    start = time.perf_counter()
    for _ in range(N):
        await make()  # type: ignore[operator]
    return (time.perf_counter() - start) / N * 1e6


async def restores(n: int) -> None:
    for state in [bench_restore.state(8) for _ in range(n)]:
        await bench_restore.VersionedUser.restore(state)


def main() -> int:
    NoSQLModelManager.instance().database = AsyncMongoMockClient().bench
    if "--loop" in sys.argv:  # for a sampling profiler outside
        asyncio.run(restores(300_000))
        return 0
    if "--tree" in sys.argv:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
        with profiler:
            asyncio.run(restores(100_000))
        print(profiler.output_text(show_all=True))
        return 0
    model = bench_restore.VersionedUser
    state = bench_restore.state(8)
    registry = MigrationRegistry.instance()
    steps = registry.graph(model).plan_upgrade("8", "10")
    graph = registry.graph(model)
    head = parse_version(model.__version__)
    chain = read_chain(model, "8")
    assert chain is not None
    rows = {
        "copy_document (deep copy)": micro(lambda: copy_document(state)),
        "LazyCopy (copied as reached) and its result": micro(lambda: LazyCopy.of(state).result()),
        "StepDocument (copy on write, tracked)": micro(lambda: StepDocument(state)),
        "read_chain (the compiled chain's lookup)": micro(lambda: read_chain(model, "8")),
        "the compiled chain, 2 steps": asyncio.run(per_call(lambda: chain(state))),
        "plan lookup (cached)": micro(lambda: graph.plan("8", head, head=head)),
        "plan walk (uncached)": micro(lambda: registry.graph(model).plan_upgrade("8", "10")),
        "run_chain, 2 steps, on a shallow copy": asyncio.run(
            per_call(lambda: run_chain(steps, dict(state)))
        ),
        "upgrade_state, all of it": asyncio.run(per_call(lambda: model.upgrade_state(state))),
    }
    print("| piece | µs |")
    print("|---|---:|")
    for name, us in rows.items():
        print(f"| {name} | {us:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
