"""The state of each span of a stream, kept in the metadata store's `spans` table, and what it does to a run.

States: new (never ingested, or its train.csv changed since), ingested (in a run's window; `drifted` when it
drifted with validate.on_drift=warn and was trained on), quarantined (refused by validate for drift or data
quality: left out of every later window while its bytes are the same), accepted (`agnews-pipeline spans
accept`: a quarantined span that is trained on and never refused again for the same SHA-256), rejected (`spans
reject`: left out for good), excluded (named in ingest.window.exclude).

Components cannot read the store, so before a run `resolve` turns the store into configuration:
`ingest.window.held_out` (quarantined and rejected spans, left out like ingest.window.exclude) and
`validate.accepted_spans` ("name:sha256" of accepted spans whose file is unchanged). After the run `record`
writes what happened: the window's spans ingested, their checks, and the spans validate refused (quarantined).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from components.ingest.spec import stream_spans
from contract.config import Config
from contract.files import file_sha256
from library.layouts import read_counts, read_sources
from pipeline.metadata import MetadataStore

STORE_FILE = "metadata.sqlite"
HELD_OUT = ("quarantined", "rejected")


def _current_sha256(config: Config) -> dict[str, str]:
    """{span name: SHA-256 of its train.csv} of the stream's spans on disk ({} if the source is not a
    stream)."""
    return {span.name: file_sha256(span.train_file) for span in stream_spans(config.ingest) or []}


def state_of(row, sha256: str | None, excluded: bool) -> str:
    """A span's state from its store row (None: never seen) and its file's SHA-256 now (None: not on disk)."""
    if excluded:
        return "excluded"
    if row is None:
        return "new"
    if row["state"] == "rejected" or sha256 is None or row["sha256"] == sha256:
        return row["state"]
    # its file changed since: it is ingested and checked again
    return "new"


def _stored_spans(config: Config) -> dict:
    """The store's span rows by name; empty for a root without a store."""
    store_path = config.pipeline_root() / STORE_FILE
    if not store_path.is_file():
        return {}
    store = MetadataStore(store_path, read_only=True)
    try:
        return store.spans()
    finally:
        store.close()


def resolve(config: Config, log=print) -> Config:
    """The configuration with the store's span states filled in (ingest.window.held_out,
    validate.accepted_spans); unchanged for a source that is not a stream or a root without a store."""
    if not (config.pipeline_root() / STORE_FILE).is_file() or stream_spans(config.ingest) is None:
        return config
    rows = _stored_spans(config)
    current = _current_sha256(config)
    states = {name: state_of(rows.get(name), sha, False) for name, sha in current.items()}
    held_out = tuple(name for name, state in states.items() if state in HELD_OUT)
    accepted = tuple(f"{name}:{current[name]}" for name, state in states.items() if state == "accepted")
    if held_out:
        log("spans held out of the window: " + ", ".join(
            f"{name} ({rows[name]['state']}: {rows[name]['reason']})" for name in held_out)
            + " (agnews-pipeline spans accept NAME to train on one)")
    window = dataclasses.replace(config.ingest.window, held_out=held_out)
    return dataclasses.replace(config, ingest=dataclasses.replace(config.ingest, window=window),
                               validate=dataclasses.replace(config.validate, accepted_spans=accepted))


def record(store: MetadataStore, result) -> None:
    """Records a finished run's spans (a pipeline.runner.RunResult): the window's spans ingested (an accepted
    span stays accepted), the checks validate made, and the spans it refused, quarantined."""
    known = store.spans()
    examples = result.artifact("ingest", "examples")
    if examples is not None and examples.properties.get("window"):
        counts = read_counts(examples.uri).get("spans", {})
        sources = read_sources(examples.uri)
        for name in examples.properties["window"]:
            sha256 = sources.get(name, {}).get("sha256")
            row = known.get(name)
            keep = row is not None and row["state"] == "accepted" and row["sha256"] == sha256
            splits = counts.get(name, {}).get("splits", {})
            rows = splits.get("train", 0) + splits.get("eval", 0)
            same_bytes = row is not None and row["sha256"] == sha256
            store.save_span(
                name,
                sha256=sha256,
                state="accepted" if keep else "ingested",
                reason=row["reason"] if keep else None,
                row_count=rows,
                # validate's checks of new bytes follow
                drifted=row["drifted"] if same_bytes else 0,
                first_run=row["first_run"] if row is not None and row["first_run"] else result.run_id,
                last_run=result.run_id,
            )
    statistics = result.artifact("validate", "statistics")
    for name, facts in (
        statistics.properties.get("span_checks", {}) if statistics is not None else {}
    ).items():
        store.save_span(name, drifted=int(facts["drifted"]),
                        checks_json=json.dumps({"drift": facts["drift"], "quality": facts["quality"]}))
    for refused in (result.error_details or {}).get("refused", []):
        store.save_span(
            refused["span"],
            sha256=refused["sha256"],
            state="quarantined",
            reason=refused["reason"],
            drifted=int(refused["reason"] == "drift"),
            checks_json=json.dumps({"drift": refused["drift"], "quality": refused["quality"]}),
        )


def listing(config: Config) -> list[dict]:
    """Every span on disk (oldest first), then the store's spans no longer on disk: name, state, drifted,
    rows, sha256, first_run, last_run, reason and checks."""
    rows = _stored_spans(config)
    current = _current_sha256(config)
    excluded = set(config.ingest.window.exclude)
    listed = []
    for name in [*current, *(name for name in rows if name not in current)]:
        row = rows.get(name)
        state = state_of(row, current.get(name), name in excluded)
        # the row describes these bytes
        stored = row is not None and state == row["state"]
        listed.append({
            "span": name, "state": state, "on_disk": name in current,
            "drifted": bool(stored and row["drifted"]), "rows": row["row_count"] if stored else None,
            "sha256": current.get(name) or (row["sha256"] if row is not None else None),
            "first_run": row["first_run"] if row is not None else None,
            "last_run": row["last_run"] if row is not None else None,
            "reason": row["reason"] if stored else None,
            "checks": json.loads(row["checks_json"]) if stored and row["checks_json"] else {}})
    return listed


def set_state(config: Config, name: str, state: str) -> str:
    """`spans accept NAME` (state accepted: only a quarantined span) or `spans reject NAME` (any span);
    returns what was done, one line; ValueError (one line) when the span cannot take that state."""
    current = _current_sha256(config)
    store = MetadataStore(Path(config.pipeline_root()) / STORE_FILE)
    try:
        row = store.spans().get(name)
        now = state_of(row, current.get(name), False) if row is not None or name in current else None
        if now is None:
            raise ValueError(f"no span {name!r} in --data {config.ingest.data} or in the store of "
                             f"{config.pipeline_root()}")
        if state == "accepted" and now != "quarantined":
            raise ValueError(
                f"span {name} is {now}, not quarantined: only a quarantined span can be accepted"
            )
        sha256 = row["sha256"] if state == "accepted" else current.get(name) or row["sha256"]
        store.save_span(name, state=state, sha256=sha256,
                        reason=f"{row['reason']}, accepted" if state == "accepted" else "rejected by hand")
    finally:
        store.close()
    if state == "accepted":
        return (
            f"span {name} accepted (SHA-256 {sha256[:12]}): the next run trains on it and does not refuse "
            "it again"
        )
    return f"span {name} rejected: it is left out of every later window"
