"""What a run tells: its progress as it goes, and a report per model.

`ModelReport` is what a run did (or, dry, would do) to one model's
documents, and what the history records; `Survey` is a model's stored
documents by version, planned, before anything is written.

"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..driver.retry import fault_line
from ..exceptions import DowngradeLeftNewerError, UniqueIndexError
from ..steps.versions import Step
from .renames import RenameReport


class Progress(Protocol):
    """What the runner tells about its progress (see `atomdb_migrate.progress`)."""

    def start(self, model: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def finish(self) -> None: ...


class QuietProgress:
    """A `Progress` that says nothing."""

    def start(self, model: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


class ProgressNotes:
    """What a run says on its progress line besides its counts: the retries, the
    calls the server is slow to answer, the pauses (where the progress has a
    ``note`` method).

    """

    def __init__(self, progress: Progress, call_timeout: float) -> None:
        self.progress, self.call_timeout = progress, call_timeout

    def say(self, text: str) -> None:
        note = getattr(self.progress, "note", None)
        if note is not None:
            note(text)

    def retrying(self, operation: str, error: BaseException, delay: float) -> None:
        self.say(f"retrying in {delay:.1f} s: {fault_line(error)}")

    def waiting(self, operation: str, seconds: float) -> None:
        if not operation:
            self.say("")
            return
        self.say(
            f"waiting on the server: {operation}, no answer for {seconds:.0f} s "
            f"(--call-timeout {self.call_timeout:g} s)"
        )


@dataclass
class ModelReport:
    """What a run did (or, dry, would do) to one model's documents."""

    #: The model's ``__model__`` name.
    model: str
    #: The version documents are taken to.
    target: str
    #: "upgrade" or "downgrade".
    direction: Literal["upgrade", "downgrade"] = "upgrade"
    #: Documents not at the target when the run started, by stored version.
    by_version: dict[str, int] = field(default_factory=dict)
    #: Documents each step applies to, by "from -> to".
    steps: dict[str, int] = field(default_factory=dict)
    #: Documents written at the target version.
    migrated: int = 0
    #: Documents changed by someone else twice while the run read them.
    skipped: int = 0
    #: Documents whose chain failed (with --continue-on-error).
    failed: int = 0
    #: Documents newer than the code, left alone (dry run: to be left alone).
    newer: int = 0
    #: Documents newer than the code when the run started, by stored version.
    newer_versions: dict[str, int] = field(default_factory=dict)
    #: Downgrading: the documents left because they are newer than the code
    #: running the downgrade (dry run: that would be), and which code to run
    #: it from. The command exits with its code.
    left_newer: DowngradeLeftNewerError | None = None
    #: Documents already past the target the other way (e.g. ahead of --to), left alone.
    beyond: int = 0
    #: The first failures: model, _id, step, error.
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: Dry run: the sampled documents, each with its restore check.
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: Steps run on the server, by "from -> to": the documents each changed
    #: (dry run: the documents each would change).
    server_steps: dict[str, int] = field(default_factory=dict)
    #: Consecutive server steps run in one pass (one pipeline update per
    #: stored version), by "from -> to" of the pass: the steps' "from -> to",
    #: in order. Only passes of several steps; each step keeps its count in
    #: `server_steps` (dry run: the passes that would run).
    server_passes: dict[str, list[str]] = field(default_factory=dict)
    #: Dry run: of the documents stored at a server step's version, those it
    #: would refuse (a value that does not convert, or cannot be put where it
    #: is moved), by "from -> to". A run fails them (``failed``).
    would_refuse: dict[str, int] = field(default_factory=dict)
    #: Renames of the model's former names (``ops.rename_model``).
    renames: list[RenameReport] = field(default_factory=list)
    #: Documents written again after the server was replaced during the
    #: run (restarted, or another member elected): a server that restarted
    #: may lose writes it acknowledged (without a journaled or majority write
    #: concern), and the run's last sweep takes the documents it finds still
    #: behind again. Skipped documents the sweep takes are counted as
    #: upgraded instead, not here.
    redone: int = 0
    #: Documents whose write was sent when the run stopped, but whose answer
    #: never came (a connection lost or timed out) and that were not at the
    #: new version when read back: the server may still apply it.
    unconfirmed: int = 0
    #: The toolkit's version index: "created" by this run, "missing" (a dry
    #: run, which creates nothing), or "" (there, or not wanted).
    version_index: str = ""
    #: What the steps' operations on the collection did ("created index
    #: title_1 {title: 1}", "set the validator (moderate, action error) ..."),
    #: or would do in a dry run: its indexes and its validator. Each change is
    #: said as soon as the server made it, so a run that stops keeps them.
    indexes: list[str] = field(default_factory=list)
    #: Dry run: the unique indexes the run could not build, documents sharing a key.
    refused: list[UniqueIndexError] = field(default_factory=list)
    #: Documents at the target whose ``__version__`` was stored in another
    #: form (the double ``1.0``, ``Int64(1)``, the string ``"1.0"``), rewritten
    #: as the canonical string (dry run: to rewrite).
    respelled: int = 0

    @property
    def pending(self) -> int:
        """Documents found not at the target at the start."""
        return sum(self.by_version.values())

    def counts(self) -> dict[str, Any]:
        """The counts, as the history records them."""
        verb = "upgraded" if self.direction == "upgrade" else "downgraded"
        return {
            "target": self.target,
            "by_version": self.by_version,
            "steps": self.steps,
            verb: self.migrated,
            "skipped": self.skipped,
            "failed": self.failed,
            "newer": self.newer,
            "beyond": self.beyond,
            "server_steps": self.server_steps,
            "server_passes": self.server_passes,
            "renames": [r.counts() for r in self.renames],
            "redone": self.redone,
            "unconfirmed": self.unconfirmed,
            "respelled": self.respelled,
            "version_index": self.version_index,
            "collection": list(self.indexes),
        }


@dataclass
class Survey:
    """A model's stored documents by version, planned: what a run will do."""

    #: The report, its `by_version` and `steps` filled.
    report: ModelReport
    #: Each stored ``__version__`` value (in its BSON form) and its count.
    rows: list[tuple[Any, int]]
    #: The longest chain any stored version takes: it holds every other one.
    chain: tuple[Step, ...]
    #: Documents newer, beyond the target, or whose chain is broken.
    others: int

    @property
    def raws(self) -> list[Any]:
        """Each stored ``__version__`` value found (in its BSON form)."""
        return [raw for raw, _ in self.rows]
