"""Run ``atomdb-migrate`` with every server command timed, the totals printed at exit.

A PyMongo command listener is registered before any client exists; at exit
the process prints to stderr the time of each command name, and the slow
ones (aggregations, updates, counts, index builds) one by one, in order.

    python benchmarks/timed_commands.py --url URL upgrade --no-progress
    python benchmarks/timed_commands.py --script benchmarks/bench_fused.py --n 30000

``--script FILE`` runs that script (its arguments after it) instead of the
command line.

"""

from __future__ import annotations

import atexit
import collections
import sys
import time
from typing import Any

from pymongo import monitoring

#: The commands listed one by one.
SHOWN = ("aggregate", "update", "createIndexes", "count", "dropIndexes", "find")
#: Their fields left out of the listing.
HIDDEN = ("lsid", "$db", "cursor", "$clusterTime", "txnNumber", "$readPreference")

took: dict[str, float] = collections.defaultdict(float)
count: collections.Counter[str] = collections.Counter()
shown: dict[int, str] = {}
calls: list[str] = []
t0 = time.perf_counter()


class Timer(monitoring.CommandListener):
    def started(self, event: Any) -> None:
        if event.command_name in SHOWN:
            command = {k: v for k, v in event.command.items() if k not in HIDDEN}
            shown[event.request_id] = str(command)[:150]

    def succeeded(self, event: Any) -> None:
        took[event.command_name] += event.duration_micros / 1e6
        count[event.command_name] += 1
        if event.request_id in shown:
            calls.append(f"    {event.duration_micros / 1e6:.3f} s  {shown.pop(event.request_id)}")

    def failed(self, event: Any) -> None:
        self.succeeded(event)


@atexit.register
def report() -> None:
    wall = time.perf_counter() - t0
    out = [f"commands: {sum(took.values()):.3f} s of {wall:.3f} s after the listener"]
    out += [
        f"  {name}: {s:.3f} s, {count[name]} calls"
        for name, s in sorted(took.items(), key=lambda kv: -kv[1])
    ]
    out += ["  the slow ones, in order:", *calls]
    print("\n".join(out), file=sys.stderr)


if __name__ == "__main__":
    monitoring.register(Timer())
    if sys.argv[1:2] == ["--script"]:
        import runpy

        sys.argv = sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    else:
        from atomdb_migrate.cli import main

        sys.argv[0] = "atomdb-migrate"
        sys.exit(main())
