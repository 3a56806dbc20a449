"""Progress of a run: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import json
import sys
import time
from typing import IO

import click

from .at_once import shown


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class _Base:
    def __init__(self, stream: IO[str] | None = None, *, database: str | None = None) -> None:
        self.stream = stream
        #: The database the run is in, named on each line while several databases
        #: run at once (None: one at a time).
        self.database = database
        self.model = ""
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        #: What holds the run up, if anything (a retry, a pause for lag).
        self.status = ""

    def start(self, model: str, total: int) -> None:
        self.model, self.total, self.done = model, total, 0
        self.started = time.monotonic()
        self.status = ""

    def note(self, text: str) -> None:
        """Say what holds the run up ("" once nothing does)."""
        self.status = text

    def advance(self, count: int) -> None:
        self.done += count

    @property
    def name(self) -> str:
        """The model as a line names it: ``tenant_eu: app.User`` while several
        databases run at once."""
        return self.model if self.database is None else f"{shown(self.database)}: {self.model}"

    def _figures(self) -> tuple[float, str]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = max(self.total - self.done, 0)
        eta = _duration(left / rate) if rate and left else "0m00s"
        return rate, eta


class BarProgress(_Base):
    """A bar redrawn in place: counts, rate and time left."""

    WIDTH = 30

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        self._drawn = 0.0

    def start(self, model: str, total: int) -> None:
        super().start(model, total)
        self._draw(force=True)

    def advance(self, count: int) -> None:
        super().advance(count)
        self.status = ""
        self._draw()

    def note(self, text: str) -> None:
        super().note(text)
        self._draw(force=True)

    def finish(self) -> None:
        self._draw(force=True)
        click.echo("", file=self.stream, err=True)

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        status = f" ({self.status})" if self.status else ""
        if not self.total and not self.done:
            # Only documents the run leaves alone (newer than the code), or none.
            click.echo(
                f"\r{self.model}: nothing to migrate{status}  ",
                file=self.stream,
                nl=False,
                err=True,
            )
            return
        rate, eta = self._figures()
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(share * self.WIDTH)
        click.echo(
            f"\r{self.model} [{bar:<{self.WIDTH}}] {self.done}/{self.total} "
            f"{share:4.0%} {rate:,.0f} docs/s ETA {eta}{status}  ",
            file=self.stream,
            nl=False,
            err=True,
        )


class LineProgress(_Base):
    """A plain line at the start, every `every` seconds, and at the end (for logs)."""

    def __init__(
        self, stream: IO[str] | None = None, every: float = 5.0, *, database: str | None = None
    ) -> None:
        super().__init__(stream, database=database)
        self.every = every
        self._said = 0.0

    def start(self, model: str, total: int) -> None:
        super().start(model, total)
        self._said = time.monotonic()
        said = f"{total} documents to migrate" if total else "nothing to migrate"
        click.echo(f"{self.name}: {said}", file=self.stream, err=True)

    def advance(self, count: int) -> None:
        super().advance(count)
        if self.counting() and time.monotonic() - self._said >= self.every:
            self._said = time.monotonic()
            self._say()

    def finish(self) -> None:
        if self.counting():
            self._say()

    def counting(self) -> bool:
        """Whether there are documents to count: none when the run migrates none
        (those it reads are newer than the code, and left alone)."""
        return bool(self.total or self.done)

    def note(self, text: str) -> None:
        if text and text != self.status:
            click.echo(f"{self.name}: {text}", file=self.stream, err=True)
        super().note(text)

    def _say(self) -> None:
        rate, eta = self._figures()
        click.echo(
            f"{self.name}: {self.done}/{self.total} documents, {rate:,.0f} docs/s, ETA {eta}",
            file=self.stream,
            err=True,
        )


class JsonProgress(LineProgress):
    """`LineProgress` as JSON objects, one a line (``--json``): ``{"progress":
    model, "done": n, "total": n}``, and ``"status"`` when something holds the
    run up; ``"database"`` while several databases run at once."""

    def start(self, model: str, total: int) -> None:
        _Base.start(self, model, total)
        self._said = time.monotonic()
        self._say()

    def note(self, text: str) -> None:
        changed = bool(text) and text != self.status
        _Base.note(self, text)
        if changed:
            self._say()

    def _say(self) -> None:
        line: dict[str, object] = {"progress": self.model, "done": self.done, "total": self.total}
        if self.database is not None:
            line["database"] = self.database
        if self.status:
            line["status"] = self.status
        click.echo(json.dumps(line), file=self.stream, err=True)


def progress_for(
    stream: IO[str] | None = None,
    enabled: bool = True,
    *,
    as_json: bool = False,
    database: str | None = None,
) -> BarProgress | LineProgress | None:
    """A bar when the stream (default: stderr) is a terminal, else plain lines;
    with `as_json`, JSON lines. With `database` (several databases at once),
    lines naming it, even on a terminal: bars redrawn in place would
    overwrite one another."""
    if not enabled:
        return None
    out: IO[str] = stream if stream is not None else sys.stderr
    if as_json:
        return JsonProgress(out, database=database)
    if database is not None:
        return LineProgress(out, database=database)
    return BarProgress(out) if out.isatty() else LineProgress(out)
