"""`--metrics-file PATH`: what a `run` or `retrain` did, in Prometheus' text format, for node_exporter's
textfile collector (or anything that scrapes a .prom file).

Written once the command ends, whatever its outcome, to a temporary file beside PATH that is then renamed
onto it (prometheus_client.write_to_textfile), so a scrape never sees half a file. A success is a run that
went through the whole pipeline (a model pushed, already pushed, or not blessed: exit 0 or 4); when the
command fails or is skipped, agnews_retrain_last_success_timestamp_seconds keeps the value of the previous
file. The facts of the run (drift, accuracies, spans) come from its run record in the pipeline root, a refused
run's too (the drift a validate on exit 8 measured is in its record's facts). The data's freshness and the
spans by state come from the data folder itself (span_states), so a skipped or failed run still reports them.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from contract.artifacts import ComponentError
from contract.data_config import IngestConfig
from library.spans import Span, discover_spans, is_stream, span_time

# Exit code -> outcome label (apps/cli/exit_codes.py). A run that ended is labelled by its own outcome.
# Every exit code of apps/cli/exit_codes.py has one (tests/unit/test_outcomes.py checks).
OUTCOME_OF_EXIT = {0: "pushed", 1: "failed", 2: "usage_error", 3: "skipped_no_new_data", 4: "not_blessed",
                   5: "locked", 6: "too_few_spans", 7: "span_not_found", 8: "drift", 9: "backfill_refused",
                   124: "timed_out", 130: "interrupted", 143: "interrupted"}
OUTCOMES = (
    "pushed",
    "already_pushed",
    "not_blessed",
    "stopped_early",
    "skipped_no_new_data",
    "failed",
    "drift",
    "too_few_spans",
    "span_not_found",
    "backfill_refused",
    "locked",
    "usage_error",
    "interrupted",
    "timed_out",
)
SUCCESSES = ("pushed", "already_pushed", "not_blessed", "stopped_early")
LAST_SUCCESS = "agnews_retrain_last_success_timestamp_seconds"


def previous_last_success(path: Path) -> float | None:
    """agnews_retrain_last_success_timestamp_seconds of an earlier file at `path`, if any."""
    from prometheus_client.parser import text_string_to_metric_families
    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    # no file yet, or one that is not ours: start afresh
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return None


def this_run(root: Path, started: float) -> dict[str, Any] | None:
    """The run record (runs/<id>/run.json) of the run this command started, or None (it never started one)."""
    runs = root / "runs"
    if not runs.is_dir():
        return None
    records = []
    for record_path in runs.glob("*/run.json"):
        if record_path.stat().st_mtime >= started:
            records.append(json.loads(record_path.read_text(encoding="utf-8")))
    return max(records, key=lambda r: r["run_id"]) if records else None


def _properties(record: dict[str, Any] | None, output: str) -> dict[str, Any]:
    """The properties of `output` in the run record: those it was published with, or, for a step that refused
    (exit 8), the facts it measured before refusing (pipeline/records.py)."""
    for step in (record or {}).get("steps", []):
        if output in step.get("outputs", {}):
            return step["outputs"][output].get("properties", {})
        if output in step.get("facts", {}):
            return step["facts"][output]
    return {}


def span_states(ingest: IngestConfig, held_out: dict[str, str] | None = None) -> list[tuple[Span, str]]:
    """Every span of the data with its state, oldest first: "in_window" (the window a run would train on), the
    store's state of a span held out of it (`held_out`: quarantined, rejected; pipeline/span_states.py),
    "excluded" (ingest.window.exclude) or "outside_window" (older than the window, or after a pinned span).
    A single csv folder is one span in the window; TFDS or a remote folder has none. When no window can be
    formed (too few spans, a missing pinned span) no span is in it."""
    held_out = held_out or {}
    from components.ingest import spec as ingest_spec
    if not ingest.data.startswith("csv:") or "://" in ingest.data:
        return []
    folder = str(Path(ingest.data[len("csv:"):]).expanduser().resolve())
    if not os.path.isdir(folder):
        return []
    if not is_stream(folder, ingest.window.pattern):
        return [(Span(os.path.basename(folder), folder), "in_window")]
    try:
        window = {span.name for span in ingest_spec.window(ingest)}
    except ComponentError:
        window = set()
    try:
        spans = discover_spans(folder, ingest.window.pattern)
    # an unreadable data folder: the metrics file is still written, without these gauges
    except OSError:
        return []
    return [(span, _span_state(span.name, window, held_out, ingest.window.exclude)) for span in spans]


def _span_state(name: str, window: set[str], held_out: dict[str, str], excluded) -> str:
    """A span's state for the gauges: in_window, its held-out state (quarantined, rejected), excluded, or
    outside_window."""
    if name in window:
        return "in_window"
    if held_out.get(name):
        return held_out[name]
    return "excluded" if name in excluded else "outside_window"


def _newest_span(spans: list[tuple[Span, str]]) -> Span | None:
    """The newest span of the window, or of the data when no window could be formed."""
    in_window = [span for span, state in spans if state == "in_window"]
    return (in_window or [span for span, _ in spans] or [None])[-1]


def outcome(exit_code: int, record: dict[str, Any] | None) -> str:
    if record is not None and record.get("status") == "succeeded":
        pushed = _properties(record, "pushed_model")
        states = {step["step"]: step["state"] for step in record["steps"]}
        if states.get("pusher") in (None, "skipped"):
            return "stopped_early"
        if pushed.get("pushed"):
            # cached, or an adopted version (the served version already held this model)
            fresh = states.get("pusher") == "ran" and not pushed.get("adopted")
            return "pushed" if fresh else "already_pushed"
        return "not_blessed"
    return OUTCOME_OF_EXIT.get(exit_code, "failed")


def write_job_metrics(path: Path, *, command: str, exit_code: int, started: float, ended: float, root: Path,
                      serving_dir: Path | None, spans: list[tuple[Span, str]] = ()) -> None:
    """Writes the metrics file; `spans` are the data's spans with their states (span_states)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    record = this_run(root, started)
    result = outcome(exit_code, record)
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, help_text, labels, registry=registry)

    gauge("agnews_retrain_last_run_timestamp_seconds", "When the last run or retrain ended (Unix time)").set(
        ended
    )
    last_success = ended if result in SUCCESSES else previous_last_success(path)
    if last_success is not None:
        gauge(LAST_SUCCESS, "When the last run or retrain that went through the pipeline ended (Unix time)") \
            .set(last_success)
    gauge("agnews_retrain_duration_seconds", "Wall time of the last run or retrain").set(ended - started)
    gauge("agnews_retrain_exit_code", "Exit code of the last run or retrain").set(exit_code)
    outcomes = gauge(
        "agnews_retrain_outcome", "1 for the outcome of the last run or retrain", ("outcome", "command")
    )
    for name in OUTCOMES:
        outcomes.labels(outcome=name, command=command).set(1 if name == result else 0)

    _drift_gauges(gauge, record)
    _accuracy_gauges(gauge, record)
    examples = _properties(record, "examples")
    if "window" in examples:
        ingested = gauge(
            "agnews_retrain_spans", "Spans of the window by what ingest did with them", ("state",)
        )
        for state in ("ingested", "reingested", "reused"):
            ingested.labels(state=state).set(len(examples.get(f"spans_{state}", [])))
    _data_gauges(gauge, spans, ended)
    version = _serving_version(serving_dir)
    if version is not None:
        gauge("agnews_serving_version", "The highest model version in the serving folder").set(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def _drift_gauges(gauge, record) -> None:
    """The newest span's drift measures and whether one was above its threshold (the statistics artifact)."""
    statistics = _properties(record, "statistics")
    if "drift" in statistics:
        drift = gauge(
            "agnews_retrain_drift",
            "Drift of the newest span from its reference (the served model's window)",
            ("measure",),
        )
        for measure, value in statistics["drift"].items():
            if value is not None:
                drift.labels(measure=measure).set(value)
        gauge("agnews_retrain_drift_detected", "1 if a drift measure was above its threshold") \
            .set(1 if statistics.get("drift_detected") else 0)


def _accuracy_gauges(gauge, record) -> None:
    """The accuracies of the candidate, baseline and anchor, and the paired test's p-value (evaluation and
    blessing artifacts)."""
    evaluation = _properties(record, "evaluation")
    if "accuracy" in evaluation:
        # The anchor (the best recent served version on the same rows) is on the evaluation or the blessing.
        anchor = evaluation.get("anchor_accuracy", _properties(record, "blessing").get("anchor_accuracy"))
        accuracy = gauge(
            "agnews_model_accuracy",
            "Accuracy of the candidate, the baseline and the anchor on the same rows",
            ("model", "data"),
        )
        for model, data, value in (
            ("candidate", "test", evaluation.get("accuracy")),
            ("baseline", "test", evaluation.get("baseline_accuracy")),
            ("anchor", "test", anchor),
            ("candidate", "newest_span", evaluation.get("newest_span_accuracy")),
            ("baseline", "newest_span", evaluation.get("newest_span_baseline_accuracy")),
        ):
            if value is not None:
                accuracy.labels(model=model, data=data).set(value)
        p_value = _properties(record, "blessing").get("p_value")
        if p_value is not None:
            gauge(
                "agnews_model_paired_p_value",
                "One-sided McNemar p-value that the candidate is worse than the "
                "baseline on the same test rows",
            ).set(p_value)


def _data_gauges(gauge, spans: list[tuple[Span, str]], now: float) -> None:
    """Spans by state, and the age of the newest span (the data's freshness)."""
    if not spans:
        return
    by_state = gauge("agnews_retrain_spans_by_state", "Spans of the data by state", ("state",))
    for state, count in sorted(Counter(state for _, state in spans).items()):
        by_state.labels(state=state).set(count)
    newest = _newest_span(spans)
    # a folder removed since: no freshness rather than no file
    with contextlib.suppress(OSError):
        gauge(
            "agnews_retrain_newest_span_age_seconds",
            "Age of the newest span in the window: now minus the "
            "date its name spells (midnight UTC), or its folder's modification time",
        ).set(now - span_time(newest))


def _serving_version(serving_dir: Path | None) -> int | None:
    from library.folder_layouts import serving_versions
    if serving_dir is None or not serving_dir.is_dir():
        return None
    versions = serving_versions(serving_dir)
    return max(versions) if versions else None
