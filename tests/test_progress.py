"""Progress: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

from atomdb_migrate.cli.progress import BarProgress, LineProgress, progress_for


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_on_a_terminal() -> None:
    out = Terminal()
    bar = progress_for(out)
    assert isinstance(bar, BarProgress)
    bar.start("app.User", 200)
    bar.advance(50)
    bar._draw(force=True)
    bar.advance(150)
    bar.finish()
    text = out.getvalue()
    assert text.startswith("\rapp.User [")
    assert "50/200  25%" in text and "200/200 100%" in text
    assert "docs/s ETA " in text and text.endswith("\n")


def test_plain_lines_elsewhere() -> None:
    out = io.StringIO()
    lines = progress_for(out)
    assert isinstance(lines, LineProgress)
    lines.every = 0
    lines.start("app.User", 10)
    lines.advance(4)
    lines.advance(6)
    lines.finish()
    text = out.getvalue().splitlines()
    assert text[0] == "app.User: 10 documents to migrate"
    assert text[1].startswith("app.User: 4/10 documents, ")
    assert text[-1].startswith("app.User: 10/10 documents, ") and "ETA 0m00s" in text[-1]
    assert "\r" not in out.getvalue()


def test_disabled() -> None:
    assert progress_for(io.StringIO(), enabled=False) is None


def test_nothing_to_migrate() -> None:
    """A run that reads only documents it leaves alone (newer than the code) counts none."""
    out = io.StringIO()
    lines = progress_for(out)
    assert isinstance(lines, LineProgress)
    lines.every = 0
    lines.start("app.User", 0)
    lines.advance(0)
    lines.finish()
    assert out.getvalue() == "app.User: nothing to migrate\n"
    term = Terminal()
    bar = progress_for(term)
    assert isinstance(bar, BarProgress)
    bar.start("app.User", 0)
    bar.advance(0)
    bar.finish()
    assert "nothing to migrate" in term.getvalue() and "0/0" not in term.getvalue()
