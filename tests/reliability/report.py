"""The figures of a reliability run, and their Markdown rendering."""

from __future__ import annotations

import re
from typing import Any

#: Filled by the tests as they run.
FIGURES: dict[str, Any] = {}


def _table(rows: list[tuple[str, Any]]) -> str:
    return "\n".join(["| figure | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in rows])


def render(f: dict[str, Any]) -> str:
    run = f.get("run", {})
    kill = f.get("kill", {})
    move = f.get("kill_move", {})
    writer = f.get("writer", {})
    runners = f.get("runners", {})
    lazy = f.get("lazy", {})
    mixed = f.get("mixed", {})
    props = f.get("properties", {})
    security = f.get("security", {})
    faults = f.get("faults", {})
    collection = f.get("collection_faults", {})
    variant = "long variants (`--long`)" if run.get("long") else "default variants"
    out = [
        "# Reliability",
        "",
        "What atomdb-migrate survives, shown by `tests/reliability/`, which runs against a",
        "SecantusDB server started by the tests. This page is written by the suite:",
        "",
        "```bash",
        "python -m pytest tests/reliability --long --reliability-report docs/reliability.md",
        "```",
        "",
        "`python -m pytest` (and so CI) runs the default variants; `--long` runs more trials",
        "on more documents.",
        "",
        f"Figures of the last full run: {variant}, {run.get('machine', '?')}, "
        f"outcome: {run.get('outcome', '?')}.",
        "",
        "## Killed mid-run",
        "",
        "Each trial seeds the documents at version 1, starts `atomdb-migrate upgrade` as a",
        "subprocess with a random batch size, sends SIGKILL after a random delay, then runs",
        "`atomdb-migrate upgrade --wait` (which waits out the dead runner's lease). The",
        "1 → 2 step counts its own applications in the document.",
        "",
        _table(
            [
                ("trials", kill.get("trials")),
                ("documents per trial", kill.get("documents")),
                ("killed mid-run (some documents written)", kill.get("killed_mid_run")),
                ("killed before the first write", kill.get("killed_before_first_write")),
                ("finished before the kill came", kill.get("finished_before_the_kill")),
                ("documents lost", kill.get("lost")),
                ("documents duplicated", kill.get("duplicated")),
                ("documents transformed twice", kill.get("transformed_twice")),
                (
                    "documents a killed run wrote that its record misses",
                    kill.get("written_by_killed_runs_not_in_their_record"),
                ),
                ("seconds", kill.get("seconds")),
            ]
        ),
        "",
        "Every document ends at the head version, transformed exactly once.",
        "",
        "Moving a model (`ops.rename_model`), killed the same way: customers referring",
        "to each other and orders referring to them (one reference and a list of one),",
        "the old collection renamed and the references rewritten by `upgrade`, killed,",
        "then run again with `--wait`. After each trial the old collection is gone,",
        "every customer is there under the new name at version 2, every order is there,",
        "and no document in any collection names the old model.",
        "",
        _table(
            [
                ("trials", move.get("trials")),
                ("customers per trial", move.get("customers")),
                ("orders per trial", move.get("orders")),
                ("killed mid-run", move.get("killed")),
                ("finished before the kill came", move.get("finished_first")),
            ]
        ),
        "",
        "## Races",
        "",
        "An app writer updates random documents, each write carrying a sequence number,",
        "for as long as an `upgrade` subprocess runs; documents changed twice while read are",
        "left for a second run.",
        "",
        _table(
            [
                ("documents", writer.get("documents")),
                ("app writes during the run", writer.get("writes")),
                ("documents the app wrote", writer.get("documents_written")),
                ("writes lost", writer.get("lost")),
                ("extra runs for skipped documents", writer.get("reruns")),
            ]
        ),
        "",
        "Two runners started together, then a holder killed mid-run:",
        "",
        _table(
            [
                ("runners started together", runners.get("started_together")),
                ("ran", runners.get("ran")),
                ("refused (exit 5, naming the holder)", runners.get("refused")),
                ("lease (lock-ttl), s", runners.get("lease_s")),
                (
                    "from the kill to a new runner's finished run, s",
                    runners.get("takeover_after_kill_s"),
                ),
            ]
        ),
        "",
        "Concurrent lazy restores with write-back of the same legacy documents, interleaved",
        "with saves (in process, many tasks, a step that yields mid-upgrade):",
        "",
        _table(
            [
                ("documents", lazy.get("documents")),
                ("saves", lazy.get("saves")),
                ("restores with write-back", lazy.get("restores")),
                ("saves lost", lazy.get("lost_saves")),
            ]
        ),
        "",
        "## Mixed versions",
        "",
        "Code at version 2 reading a document written by code at version 3:",
        "",
        "| `__on_newer__` | behaviour |",
        "|---|---|",
        f"| `raise` (default) | `NewerDocumentError`: {mixed.get('raise_message', '?')} |",
        f"| `restore` | {mixed.get('restore_policy', '?')} |",
        f"| `downgrade` | taken back through the steps' downgrade functions; "
        f"{mixed.get('downgrade_policy', '?')} |",
        "",
        "In every case the old code's `save()` raises `NewerDocumentError` and the fields it",
        "does not know stay stored.",
        "",
        "## Properties",
        "",
        f"Hypothesis, {props.get('examples', '?')} generated sets of documents: "
        f"{props.get('properties', '?')}.",
        "",
        "## Bad input",
        "",
        "Each case runs `atomdb-migrate upgrade` (or the command shown) on 20 documents and",
        "compares every stored document before and after.",
        "",
        "| input | message (one line) | exit code | written |",
        "|---|---|---:|---|",
    ]
    for row in f.get("bad_input", []):
        # A test's temporary project directory is noise: keep the path inside it.
        message = re.sub(r"/\S*?/pytest-\d+/[^/\s]+/", "", row["message"]).replace("|", "\\|")
        out.append(f"| {row['input']} | `{message}` | {row['code']} | {row['written']} |")
    out += [
        "",
        "Hostile cases that write on purpose, or take more than one command, each a test",
        "in `tests/reliability/test_bad_input.py`:",
        "",
        "- `--continue-on-error` with results BSON cannot hold: the others are upgraded,",
        "  each failure is recorded with its `_id`, exit 6.",
        "- Results over 16 MB: one short line on screen and in the record, exit 6.",
        "- A step adding top-level keys named `$odd` and `a.b`: stored as written.",
        "- Versions a shell stored as numbers (`1.0`, `1`): one version in `status`,",
        "  `--dry-run` and `upgrade`.",
        "- History records the toolkit did not write: shown with `?` for what is missing.",
        "- Documents newer than the code: `upgrade` warns and exits 0, the gate fails.",
        "- An unversioned pod saving after an upgrade: flagged by `status` and the gate.",
        '- `init` with `[tool."atomdb-migrate"]`, from a subdirectory, on a broken file.',
        "- Ctrl-C: exit 130, the documents written printed and recorded (`interrupted`).",
        "- A synchronous step slower than the lease, per batch and per document: the",
        "  lease is renewed from a thread of its own, and the run finishes.",
        "- A result with a key that is not a string: one line, exit 6; with",
        "  `--continue-on-error` the others are upgraded.",
        "- A step's error quoting the URL under `--continue-on-error`: masked on screen and",
        "  in the record.",
        "",
        "## Server faults",
        "",
        "Each fault is SecantusDB's `failCommand` fail point (as MongoDB's drivers test",
        "their retryable reads and writes), aimed by `appName` at the run's own",
        "connections, with the driver's single retry turned off, during an upgrade of",
        f"{faults.get('documents', '?')} documents in batches of 250",
        "(`tests/reliability/test_faults.py`). After each, every document is at the",
        "head, transformed exactly once (the step counts its applications), and the",
        "report counts each once. A retry is the runner's own, logged as it happens.",
        "",
        "| fault | outcome | retries | seconds |",
        "|---|---|---:|---:|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in faults.get("rows", [])],
        "",
        "After each fault scenario (with and without an app changing the documents",
        "meanwhile) the record of the run is checked against the server",
        "(`tests/reliability/record_check.py`): `upgraded` is the documents at the new",
        "version, `skipped` and `failed` those still behind, `redone` none unless the",
        "server was replaced; a stopped run's count is short by its `unconfirmed` at",
        "most, and a killed run's record (from its last lease renewal or write) by its",
        f"last batch at most. Checked after {faults.get('records_checked', '?')} scenarios.",
        "",
        "### Collection state",
        "",
        "For each collection operation a step asks for, each command of the model's run",
        "fails in turn, on a fresh collection: once with a code the runner does not retry",
        "(the run stops there), once with a dropped connection (ridden through); a step",
        "raising on one document is one more run (`tests/reliability/test_collection_faults.py`).",
        "After each run the collection has every index it had before (the old one or its",
        "replacement), replaying the lines the run printed over the collection as it was",
        "gives the collection as it is (indexes and validator), and the history record",
        "holds the same lines. A non-retried code that did not stop the run hit a read",
        "the runner does without (the indexes listed to choose how to read).",
        "",
        "| operation | commands failed in turn | runs | stopped by the fault |",
        "|---|---:|---:|---:|",
        *[
            f"| {label} | {row.get('commands')} | {row.get('runs')} | {row.get('stopped')} |"
            for label, row in collection.items()
        ],
        "",
        "## Data safety",
        "",
        "What the main suite proves on SecantusDB and mongomock (`python -m pytest`):",
        "",
        "- Every path stores the same bytes: the lazy path, the eager runner on the",
        "  client and on the server, and write-back, for generated documents over every",
        "  BSON type atom-db meets and steps that change types only",
        "  (`tests/test_bson_exact.py`, compared as encoded BSON).",
        "- Whatever `__on_newer__` and `__write_back__` say, a read through any projection",
        "  leaves the stored document as it was or fully upgraded: never at a lower",
        "  version, never missing a field the full upgrade keeps (`tests/test_policies.py`).",
        "- Conditional writes match each field exactly (type, arrays, null against",
        "  missing): a concurrent change that loose equality would miss is kept, on",
        "  write-back and in `upgrade`; a filter holds each value once, so a document",
        "  near 16 MB whose step moves or changes its large field is upgraded, and a",
        "  concurrent change to that field that keeps its size is still seen",
        "  (`tests/test_write_guard.py`).",
        "- A write-back the server refuses, or one too large to send, never fails the read;",
        "  the Python API leaves atom-db's manager, proxies and cache as it found them;",
        "  numeric, null and 5,000-digit versions; SON documents; keys with `.` and `$`",
        "  (`tests/test_data_safety.py`).",
        "- Secrets in any URL form a driver accepts are masked by position, and ordinary",
        "  words are never garbled (`tests/test_masking.py`, generated URLs).",
        "- A generated step module compiles and keeps its message and defaults exactly,",
        "  whatever they hold (`tests/test_generated_modules.py`, generated messages).",
        "",
        "## Security",
        "",
        f"- No credential appears in the output or the log lines of any command "
        f"({security.get('commands_checked', '?')} invocations checked against a server with",
        "  `--auth`, succeeding and failing), nor in any line of the catalogue above.",
        "- Step modules load only from the configured directory: files directly in it,",
        "  not in subdirectories, and a link to a file elsewhere is refused.",
        "- Nothing stored is evaluated: a stored `__version__`, `__model__` or field holding",
        "  Python code is parsed or compared as data, and refused.",
        "",
    ]
    return "\n".join(out)
