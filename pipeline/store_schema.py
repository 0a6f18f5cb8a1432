"""The metadata store's schema: numbered migrations keyed on SQLite's `user_version`, and the rule that
stores artifact URIs relative to the pipeline root (so a moved or restored root stays self-consistent)."""
from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Callable

# A run folder's name, e.g. runs/20261128T051159-904914/; used to find the pipeline-root part of an old
# absolute URI written by a root that has since been moved or copied.
_RUN_FOLDER = re.compile(r"/(runs/\d{8}T\d{6}-[0-9a-f]+(?:/.*)?)$")


def relative_to_root(uri: str, root: Path) -> str:
    """`uri` relative to the pipeline root when it lies under it (or under the run folder of the root it was
    copied from); anything else is kept as it is, and gc refuses to touch it."""
    if not os.path.isabs(uri):
        return uri
    root_text = os.path.normpath(str(Path(root).absolute()))
    normalized = os.path.normpath(uri)
    if normalized == root_text or normalized.startswith(root_text + os.sep):
        return os.path.relpath(normalized, root_text)
    match = _RUN_FOLDER.search(normalized)
    return match.group(1) if match else uri


def _relative_uris(db: sqlite3.Connection, root: Path) -> None:
    for table, column in (("artifacts", "uri"), ("executions", "output_dir")):
        rows = db.execute(f"SELECT rowid, {column} FROM {table} WHERE {column} IS NOT NULL").fetchall()
        for rowid, value in rows:
            relative = relative_to_root(value, root)
            if relative != value:
                db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (relative, rowid))


# Each entry migrates the schema from version i to i + 1: SQL, or a function (connection, pipeline root) for a
# data migration. Append only; never edit a released entry.
MIGRATIONS: tuple[str | Callable[[sqlite3.Connection, Path], None], ...] = (
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        command TEXT NOT NULL,
        status TEXT NOT NULL,             -- running | succeeded | failed | interrupted
        started REAL NOT NULL,
        ended REAL,
        config_json TEXT NOT NULL,
        data_fingerprint TEXT,
        outcome TEXT,                     -- pushed | not_blessed | stopped_early | ...
        error TEXT
    );
    CREATE TABLE executions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(id),
        step TEXT NOT NULL,
        state TEXT NOT NULL,              -- running | complete | cached | failed | skipped | interrupted
        started REAL NOT NULL,
        ended REAL,
        cache_key TEXT,
        code_version TEXT,
        config_json TEXT,
        output_dir TEXT,
        reused_execution_id INTEGER REFERENCES executions(id),
        error TEXT
    );
    CREATE INDEX executions_by_cache_key ON executions(step, cache_key, state);
    CREATE TABLE artifacts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        uri TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        properties_json TEXT NOT NULL,
        created REAL NOT NULL,
        deleted REAL                      -- set by garbage collection
    );
    CREATE TABLE events (
        execution_id INTEGER NOT NULL REFERENCES executions(id),
        artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
        kind TEXT NOT NULL,               -- input | output
        name TEXT NOT NULL
    );
    CREATE INDEX events_by_execution ON events(execution_id);
    CREATE INDEX events_by_artifact ON events(artifact_id);
    """,
    # 2: absolute artifact URIs and output folders under the pipeline root become relative
    _relative_uris,
    """
    -- the spans of a stream and what happened to them (pipeline/span_states.py)
    CREATE TABLE spans (
        name TEXT PRIMARY KEY,
        sha256 TEXT,                      -- the bytes of train.csv the state applies to
        state TEXT NOT NULL,              -- ingested | quarantined | accepted | rejected
        reason TEXT,                      -- why quarantined or rejected: drift, test_overlap, ...
        drifted INTEGER NOT NULL DEFAULT 0,
        row_count INTEGER,
        checks_json TEXT,                 -- the last checks: {"drift": {...}, "quality": {...}}
        first_run TEXT,
        last_run TEXT,
        updated REAL NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# the version that added the spans table
SPANS_SCHEMA_VERSION = 3
