"""The reliability suite: faults, races, bad input. Figures go to a report.

``python -m pytest tests/reliability --long --reliability-report docs/reliability.md``
runs the long variants and writes the figures of the run.

"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest

from .report import FIGURES, render


@pytest.fixture(autouse=True, scope="session")
def _machine(request: pytest.FixtureRequest) -> None:
    FIGURES["run"] = {
        "long": bool(request.config.getoption("--long")),
        "machine": f"{platform.machine()}, CPython {platform.python_version()}",
    }


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--reliability-report")
    if path and FIGURES.get("kill"):
        FIGURES["run"]["outcome"] = "passed" if exitstatus == 0 else f"failed ({exitstatus})"
        Path(path).write_text(render(FIGURES))


def record(section: str, **values: Any) -> None:
    FIGURES.setdefault(section, {}).update(values)
