"""The metadata store: runs, component executions, artifacts and the events that link them.

SQLite through the standard library, one file under the pipeline root, shaped after ml-metadata (which cannot
be installed beside this stack): an execution consumes and produces artifacts through input/output events, so
any artifact's lineage is a walk back through its producer's inputs. Every multi-row change happens in one
transaction, so a reader never sees a half-recorded execution. Schema changes are numbered migrations keyed on
SQLite's `user_version` (pipeline/store_schema.py).

Artifact URIs and output folders are stored relative to the pipeline root (the folder holding the store), so a
root that is moved, copied or restored from a backup stays self-consistent: its cache points at its own files.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from contract.artifacts import Artifact
from contract.disk import disk_full, not_writable
from pipeline.store_errors import store_error
from pipeline.store_schema import MIGRATIONS, SCHEMA_VERSION, SPANS_SCHEMA_VERSION, relative_to_root


@dataclass(frozen=True)
class StoredArtifact:
    id: int
    name: str
    uri: Path
    fingerprint: str
    properties: dict[str, Any]
    deleted: bool

    def as_artifact(self) -> Artifact:
        return Artifact(self.name, self.uri, self.properties)


class MetadataStore:
    """`read_only=True` opens an existing store without writing anything (no migration, no WAL switch), so
    `runs` and `show` work on a read-only root."""

    def __init__(self, path: Path, read_only: bool = False):
        self.path = Path(path)
        self.root = self.path.parent.absolute()
        try:
            if read_only:
                self._db = self._connect_read_only()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Created owner-only: the store holds the run configurations.
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
                self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            if read_only:
                self._check_version(self.schema_version())
            else:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._migrate()
        except sqlite3.DatabaseError as error:
            raise store_error(self.path, error) from None
        # creating the file: a full disk or a refused write
        except OSError as error:
            if disk_full(error) or not_writable(error):
                raise store_error(self.path, error) from None
            raise

    def _connect_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no metadata store at {self.path}: nothing has run under this pipeline root"
            )
        db = sqlite3.connect(
            f"{self.path.absolute().as_uri()}?mode=ro", uri=True, timeout=60, isolation_level=None
        )
        try:
            db.execute("PRAGMA user_version").fetchone()
        except sqlite3.OperationalError:
            # A WAL store on a read-only folder cannot get its -shm file; nobody can write there, so reading
            # it as immutable is safe.
            db.close()
            db = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?immutable=1", uri=True, isolation_level=None
            )
        return db

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL does)
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        # one line that tells a full disk from a damaged store
        except sqlite3.DatabaseError as error:
            raise store_error(self.path, error) from error

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            for number in range(version, SCHEMA_VERSION):
                migration = MIGRATIONS[number]
                if callable(migration):
                    migration(db, self.root)
                else:
                    for statement in migration.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema version {version}, newer than this code's "
                               f"{SCHEMA_VERSION}: upgrade agnews-pipeline")

    def _stored(self, path: Path | str) -> str:
        return relative_to_root(str(path), self.root)

    def resolve(self, stored: str) -> Path:
        """A stored URI as a path (relative ones are under the pipeline root)."""
        return self.root / stored

    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    # Runs ---------------------------------------------------------------------------------------------------

    def start_run(self, run_id: str, command: str, config: dict, data_fingerprint: str | None) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO runs (id, command, status, started, config_json, data_fingerprint) "
                       "VALUES (?, ?, 'running', ?, ?, ?)",
                       (run_id, command, time.time(), json.dumps(config, sort_keys=True), data_fingerprint))

    def finish_run(
        self, run_id: str, status: str, outcome: str | None = None, error: str | None = None
    ) -> None:
        """status: succeeded | failed | interrupted | timed_out (ended by pipeline.deadline)."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET status = ?, ended = ?, outcome = ?, error = ? WHERE id = ?",
                       (status, time.time(), outcome, error, run_id))

    def mark_interrupted(self) -> list[str]:
        """Marks runs and executions left 'running' by a killed process; call while holding the root lock."""
        with self._transaction() as db:
            stale = [row["id"] for row in db.execute("SELECT id FROM runs WHERE status = 'running'")]
            now = time.time()
            db.execute(
                "UPDATE executions SET state = 'interrupted', ended = ? WHERE state = 'running'", (now,)
            )
            db.execute("UPDATE runs SET status = 'interrupted', ended = ? WHERE status = 'running'", (now,))
        return stale

    def runs(self, limit: int | None = None) -> list[sqlite3.Row]:
        query = "SELECT * FROM runs ORDER BY started DESC, id DESC"
        if limit:
            query += f" LIMIT {int(limit)}"
        return list(self._db.execute(query))

    def run(self, run_id: str) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()

    def last_successful_run(self, command: str | None = None) -> sqlite3.Row | None:
        query = "SELECT * FROM runs WHERE status = 'succeeded'"
        args: tuple = ()
        if command:
            query += " AND command = ?"
            args = (command,)
        return self._db.execute(query + " ORDER BY started DESC LIMIT 1", args).fetchone()

    # Spans --------------------------------------------------------------------------------------------------

    def spans(self) -> dict[str, sqlite3.Row]:
        """{span name: its row of the spans table}; {} from a read-only store of an older schema (no table
        yet)."""
        if self.schema_version() < SPANS_SCHEMA_VERSION:
            return {}
        return {row["name"]: row for row in self._db.execute("SELECT * FROM spans ORDER BY name")}

    def save_span(self, name: str, **columns: Any) -> None:
        """Creates or updates the span's row with these columns of the spans table (names from the code
        only)."""
        columns["updated"] = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM spans WHERE name = ?", (name,)).fetchone() is None:
                db.execute(f"INSERT INTO spans (name, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})",
                           (name, *columns.values()))
            else:
                db.execute(f"UPDATE spans SET {', '.join(f'{c} = ?' for c in columns)} WHERE name = ?",
                           (*columns.values(), name))

    # Executions ---------------------------------------------------------------------------------------------

    def start_execution(self, run_id: str, step: str, cache_key: str | None, code_version: str | None,
                        config: dict | None) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO executions (run_id, step, state, started, cache_key, code_version, config_json) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (run_id, step, time.time(), cache_key, code_version, json.dumps(config, sort_keys=True)))
            return cursor.lastrowid

    def record_skipped(self, run_id: str, step: str, reason: str) -> None:
        with self._transaction() as db:
            now = time.time()
            db.execute("INSERT INTO executions (run_id, step, state, started, ended, error) "
                       "VALUES (?, ?, 'skipped', ?, ?, ?)", (run_id, step, now, now, reason))

    def fail_execution(self, execution_id: int, error: str) -> None:
        with self._transaction() as db:
            db.execute("UPDATE executions SET state = 'failed', ended = ?, error = ? WHERE id = ?",
                       (time.time(), error, execution_id))

    def complete_execution(self, execution_id: int, output_dir: Path, inputs: dict[str, int],
                           outputs: dict[str, tuple[Artifact, str]]) -> dict[str, int]:
        """Records the published outputs (artifact, fingerprint) and all events in one transaction."""
        with self._transaction() as db:
            output_ids = {}
            for name, (artifact, fingerprint) in outputs.items():
                cursor = db.execute(
                    "INSERT INTO artifacts (name, uri, fingerprint, properties_json, created) VALUES "
                    "(?, ?, ?, ?, ?)",
                    (
                        artifact.name,
                        self._stored(artifact.uri),
                        fingerprint,
                        json.dumps(artifact.properties, sort_keys=True, default=str),
                        time.time(),
                    ),
                )
                output_ids[name] = cursor.lastrowid
            self._insert_events(db, execution_id, inputs, output_ids)
            db.execute("UPDATE executions SET state = 'complete', ended = ?, output_dir = ? WHERE id = ?",
                       (time.time(), self._stored(output_dir), execution_id))
        return output_ids

    def record_cached(self, execution_id: int, reused_execution_id: int, inputs: dict[str, int],
                      outputs: dict[str, int]) -> None:
        with self._transaction() as db:
            self._insert_events(db, execution_id, inputs, outputs)
            db.execute("UPDATE executions SET state = 'cached', ended = ?, reused_execution_id = ?, "
                       "output_dir = (SELECT output_dir FROM executions WHERE id = ?) WHERE id = ?",
                       (time.time(), reused_execution_id, reused_execution_id, execution_id))

    @staticmethod
    def _insert_events(db, execution_id: int, inputs: dict[str, int], outputs: dict[str, int]) -> None:
        for kind, named in (("input", inputs), ("output", outputs)):
            for name, artifact_id in named.items():
                db.execute("INSERT INTO events (execution_id, artifact_id, kind, name) VALUES (?, ?, ?, ?)",
                           (execution_id, artifact_id, kind, name))

    def find_cached(self, step: str, cache_key: str) -> list[sqlite3.Row]:
        """Successful executions with this cache key, newest first (each may have lost its outputs since)."""
        return list(self._db.execute(
            "SELECT * FROM executions WHERE step = ? AND cache_key = ? AND state = 'complete' "
            "ORDER BY id DESC", (step, cache_key)))

    def completed(self, step: str, limit: int) -> list[sqlite3.Row]:
        """The newest `limit` executions of `step` that ran to the end (a cached reuse did no work), newest
        first."""
        return list(self._db.execute("SELECT * FROM executions WHERE step = ? AND state = 'complete' "
                                     "AND ended IS NOT NULL ORDER BY id DESC LIMIT ?", (step, limit)))

    def executions(self, run_id: str) -> list[sqlite3.Row]:
        return list(self._db.execute("SELECT * FROM executions WHERE run_id = ? ORDER BY id", (run_id,)))

    def execution(self, execution_id: int) -> sqlite3.Row | None:
        return self._db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()

    # Artifacts ----------------------------------------------------------------------------------------------

    def _artifact(self, row: sqlite3.Row) -> StoredArtifact:
        return StoredArtifact(row["id"], row["name"], self.resolve(row["uri"]), row["fingerprint"],
                              json.loads(row["properties_json"]), row["deleted"] is not None)

    def artifact(self, artifact_id: int) -> StoredArtifact:
        return self._artifact(
            self._db.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
        )

    def artifacts_of(self, execution_id: int, kind: str) -> dict[str, StoredArtifact]:
        rows = self._db.execute(
            "SELECT events.name AS event_name, artifacts.* FROM events JOIN artifacts ON artifacts.id = "
            "events.artifact_id WHERE events.execution_id = ? AND events.kind = ? ORDER BY events.rowid",
            (execution_id, kind))
        return {row["event_name"]: self._artifact(row) for row in rows}

    def producer(self, artifact_id: int) -> sqlite3.Row | None:
        """The execution that actually wrote the artifact (not the cached ones that reused it)."""
        return self._db.execute(
            "SELECT executions.* FROM events JOIN executions ON executions.id = events.execution_id "
            "WHERE events.artifact_id = ? AND events.kind = 'output' AND executions.state = 'complete'",
            (artifact_id,)).fetchone()

    def lineage(self, artifact_id: int, cut: frozenset[str] = frozenset()
                ) -> list[tuple[sqlite3.Row, dict[str, StoredArtifact]]]:
        """The executions upstream of an artifact, nearest first, each with its input artifacts; inputs named
        in `cut` are listed but not followed further up."""
        seen, order, frontier = set(), [], [artifact_id]
        while frontier:
            execution = self.producer(frontier.pop(0))
            if execution is None or execution["id"] in seen:
                continue
            seen.add(execution["id"])
            inputs = self.artifacts_of(execution["id"], "input")
            order.append((execution, inputs))
            frontier.extend(a.id for name, a in inputs.items() if name not in cut)
        return order

    def computed_from(self, artifact_id: int, inputs: dict[str, str] | None) -> bool:
        """Whether the execution that wrote the artifact consumed exactly these {input name: fingerprint}."""
        producer = self.producer(artifact_id)
        if not inputs or producer is None:
            return False
        consumed = self.artifacts_of(producer["id"], "input")
        return all(name in consumed and consumed[name].fingerprint == value for name, value in inputs.items())

    def newest_output(self, step: str, output: str, where: str, matching: dict[str, Any],
                      exclude_fingerprint: str | None = None,
                      exclude_inputs: dict[str, str] | None = None) -> StoredArtifact | None:
        """The newest `output` an execution of `step` wrote with the property `where` true and the `matching`
        property values (e.g. the tuner's newest search for one search fingerprint); deleted artifacts, one
        with the excluded fingerprint and those computed from `exclude_inputs` are skipped."""
        rows = self._db.execute(
            "SELECT events.artifact_id FROM executions JOIN events ON events.execution_id = executions.id "
            "AND events.kind = 'output' AND events.name = ? WHERE executions.step = ? "
            "AND executions.state = 'complete' ORDER BY executions.id DESC", (output, step))
        for row in rows:
            artifact = self.artifact(row["artifact_id"])
            if (
                artifact.properties.get(where)
                and not artifact.deleted
                and artifact.fingerprint != exclude_fingerprint
                and all(artifact.properties.get(k) == v for k, v in matching.items())
                and not self.computed_from(artifact.id, exclude_inputs)
            ):
                return artifact
        return None

    def newest_judged_input(self, step: str, input_name: str, judgement: str, where: str,
                            exclude_fingerprint: str | None = None,
                            exclude_inputs: dict[str, str] | None = None) -> StoredArtifact | None:
        """The artifact that the newest execution of `step` consumed as `input_name` while its `judgement`
        output had the property `where` true (e.g. the model an evaluator blessed); deleted artifacts, one
        with the excluded fingerprint and those computed from `exclude_inputs` are skipped."""
        rows = self._db.execute(
            "SELECT consumed.artifact_id, verdict.properties_json FROM executions "
            "JOIN events AS judged ON judged.execution_id = executions.id AND judged.kind = 'output' "
            "AND judged.name = ? "
            "JOIN artifacts AS verdict ON verdict.id = judged.artifact_id "
            "JOIN events AS consumed ON consumed.execution_id = executions.id AND consumed.kind = 'input' "
            "AND consumed.name = ? "
            "WHERE executions.step = ? AND executions.state IN ('complete', 'cached') ORDER BY "
            "executions.id DESC",
            (judgement, input_name, step),
        )
        for row in rows:
            if json.loads(row["properties_json"]).get(where):
                artifact = self.artifact(row["artifact_id"])
                if (not artifact.deleted and artifact.fingerprint != exclude_fingerprint
                        and not self.computed_from(artifact.id, exclude_inputs)):
                    return artifact
        return None

    def outputs_where(self, step: str, output: str, where: str) -> list[tuple[sqlite3.Row, StoredArtifact]]:
        """(execution, artifact) for every `output` that an execution of `step` wrote with the property
        `where` true (e.g. every model push that happened)."""
        result = []
        for execution in self._db.execute("SELECT * FROM executions WHERE step = ? AND state = 'complete' "
                                          "ORDER BY id", (step,)):
            artifact = self.artifacts_of(execution["id"], "output").get(output)
            if artifact is not None and artifact.properties.get(where):
                result.append((execution, artifact))
        return result

    def live_artifacts(self) -> list[StoredArtifact]:
        return [self._artifact(r) for r in self._db.execute("SELECT * FROM artifacts WHERE deleted IS NULL")]

    def external_artifact(self, name: str, uri: Path, fingerprint: str, properties: dict) -> StoredArtifact:
        """An artifact no execution produced (a served version used as a baseline), recorded once per
        fingerprint so lineage and cache keys can refer to it. gc never deletes external artifacts."""
        properties = {**properties, "external": True}
        stored = self._stored(uri)
        row = self._db.execute("SELECT * FROM artifacts WHERE name = ? AND uri = ? AND fingerprint = ? "
                               "AND deleted IS NULL", (name, stored, fingerprint)).fetchone()
        if row is None:
            with self._transaction() as db:
                cursor = db.execute(
                    "INSERT INTO artifacts (name, uri, fingerprint, properties_json, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, stored, fingerprint, json.dumps(properties, sort_keys=True), time.time()),
                )
            row = self._db.execute("SELECT * FROM artifacts WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return self._artifact(row)

    def stored_uri(self, artifact_id: int) -> str:
        return self._db.execute("SELECT uri FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()[0]

    def mark_deleted(self, artifact_ids: list[int]) -> None:
        with self._transaction() as db:
            now = time.time()
            for artifact_id in artifact_ids:
                db.execute("UPDATE artifacts SET deleted = ? WHERE id = ?", (now, artifact_id))
