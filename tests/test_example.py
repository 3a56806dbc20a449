"""The blog example, run as a new user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

from pymongo import MongoClient

STORY = Path(__file__).resolve().parent.parent / "examples" / "blog" / "story.py"


def run_story(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(STORY), "-n", "300", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def check(out: str) -> None:
    before, after = out.split("5. The eager upgrade")
    assert "$ atomdb-migrate status" in before
    assert "blog.Page: code at 3; stored 1: " in before and "pending" in before
    assert "stored: version 1, heading='Page 300', meta={'status': 'preview'" in before
    assert "restored: title='Page 300', status='preview', images=['/img/0.png']" in before
    assert "author (stored without a version): first='Writer', last='300', active=True" in before
    for line in (
        "blog.Comment: code at 2; stored 2: 300; 0 pending",
        "blog.Image: code at 1; stored 1: 10; 0 pending",
        "blog.Page: code at 3; stored 3: 301; 0 pending",
        "blog.User: code at 2; stored 2: 301; 0 pending",
    ):
        assert line in after
    assert " upgraded to 3, 0 skipped (changed meanwhile), 0 failed" in after
    # Queries during the rollout find what the same query finds after it.
    counts = re.findall(r"count_documents\(\{'status': 'live'\}\): (\d+)", out)
    translated = re.findall(r"Page.count\(\{'status': 'live'\}.*?\): (\d+)", out)
    assert len(counts) == 2 and len(translated) == 2, out
    assert int(counts[0]) < int(counts[1]), "before the upgrade, the plain query misses pages"
    assert translated == [counts[1], counts[1]], out
    assert "Page.find_one({'title': 'Page 300'}), stored with heading: 'Page 300'" in before
    assert "Comment.count({'likes': {'$gte': 20}}) refused: model 'blog.Comment': " in before
    assert "0005_comment_likes_int.py" in before
    assert "with guard_queries('warn'): blog.Page: the query {'status': 'live'} misses " in before


def test_story_in_memory() -> None:
    check(run_story())


def test_story_on_a_server(secantus_url: str) -> None:
    name = f"blog_{uuid.uuid4().hex[:8]}"
    try:
        check(run_story("--url", f"{secantus_url}/{name}"))
    finally:
        with MongoClient(secantus_url) as client:
            client.drop_database(name)
