"""What ``atomdb-migrate revision`` prints: the module written, what is left to
its author, and the exact line that raises the model's ``__version__``.

"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..commands.revision import Revision


def say_revision(done: Revision, autogenerate: bool) -> None:
    """The step module written, and what is left to the author."""
    click.echo(f"wrote {done.path} ({done.model} {done.from_version} -> {done.to_version})")
    if autogenerate and done.diff is None:
        click.echo(f"  no earlier step records a schema: {done.left_to_write}")
    elif done.diff is not None:
        click.echo(f"  {done.diff.describe() or 'no change to the fields since the snapshot'}")
    for line in done.indexes:
        click.echo(f"  {line} (__indexes__)")
    if done.moved_from:
        click.echo(
            f"  the model's steps were written under {done.moved_from}: "
            + (
                "the step starts with ops.rename_model"
                if autogenerate
                else f"add ops.rename_model({done.moved_from!r}, {done.model!r}) to it"
            )
        )
    for hint in done.hints:
        click.echo(f"  {hint}")
    if done.bump:
        click.echo(f"  {version_hint(done)}")


def version_hint(done: Revision) -> str:
    """The exact line that raises the model's ``__version__`` to the step's."""
    if done.version_line is None:
        where = f" ({shown_path(done.model_file)})" if done.model_file else ""
        return f"then add {done.new_version_line} to {done.model}{where}"
    path, line, now = done.version_line
    return (
        f"then set {done.new_version_line} on {done.model} ({shown_path(path)}:{line}, now `{now}`)"
    )


def shown_path(path: Path) -> str:
    """A path relative to the working directory when under it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
