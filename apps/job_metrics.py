"""`--metrics-file PATH`: what a `run` or `retrain` did, in Prometheus' text format, for node_exporter's
textfile collector (or anything that scrapes a .prom file).

Written once the command ends, whatever its outcome, to a temporary file beside PATH that is then renamed
onto it (prometheus_client.write_to_textfile), so a scrape never sees half a file. A success is a run that went
through the whole pipeline (a model pushed, already pushed, or not blessed: exit 0 or 4); when the command
fails or is skipped, agnews_retrain_last_success_timestamp_seconds keeps the value of the previous file.
The facts of the run (drift, accuracies, spans) come from its run record in the pipeline root.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Exit code -> outcome label (apps/cli/exit_codes.py). A run that ended is labelled by its own outcome.
OUTCOME_OF_EXIT = {0: "pushed", 1: "failed", 2: "usage_error", 3: "skipped_no_new_data", 4: "not_blessed",
                   5: "locked", 6: "too_few_spans", 7: "span_not_found", 8: "drift", 9: "backfill_refused", 130: "interrupted",
                   143: "interrupted"}
OUTCOMES = ("pushed", "already_pushed", "not_blessed", "stopped_early", "skipped_no_new_data", "failed", "drift",
            "too_few_spans", "span_not_found", "backfill_refused", "locked", "usage_error", "interrupted")
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
    except (OSError, ValueError, UnicodeDecodeError):  # no file yet, or one that is not ours: start afresh
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
    for step in (record or {}).get("steps", []):
        if output in step.get("outputs", {}):
            return step["outputs"][output].get("properties", {})
    return {}


def outcome(exit_code: int, record: dict[str, Any] | None) -> str:
    if record is not None and record.get("status") == "succeeded":
        pushed = _properties(record, "pushed_model")
        states = {step["step"]: step["state"] for step in record["steps"]}
        if states.get("pusher") in (None, "skipped"):
            return "stopped_early"
        if pushed.get("pushed"):
            return "pushed" if states.get("pusher") == "ran" else "already_pushed"
        return "not_blessed"
    return OUTCOME_OF_EXIT.get(exit_code, "failed")


def write_job_metrics(path: Path, *, command: str, exit_code: int, started: float, ended: float, root: Path,
                      serving_dir: Path | None) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    record = this_run(root, started)
    result = outcome(exit_code, record)
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, help_text, labels, registry=registry)

    gauge("agnews_retrain_last_run_timestamp_seconds", "When the last run or retrain ended (Unix time)").set(ended)
    last_success = ended if result in SUCCESSES else previous_last_success(path)
    if last_success is not None:
        gauge(LAST_SUCCESS, "When the last run or retrain that went through the pipeline ended (Unix time)") \
            .set(last_success)
    gauge("agnews_retrain_duration_seconds", "Wall time of the last run or retrain").set(ended - started)
    gauge("agnews_retrain_exit_code", "Exit code of the last run or retrain").set(exit_code)
    outcomes = gauge("agnews_retrain_outcome", "1 for the outcome of the last run or retrain", ("outcome", "command"))
    for name in OUTCOMES:
        outcomes.labels(outcome=name, command=command).set(1 if name == result else 0)

    statistics = _properties(record, "statistics")
    if "drift" in statistics:
        drift = gauge("agnews_retrain_drift", "Drift of the newest span from the rest of the window", ("measure",))
        for measure, value in statistics["drift"].items():
            if value is not None:
                drift.labels(measure=measure).set(value)
        gauge("agnews_retrain_drift_detected", "1 if a drift measure was above its threshold") \
            .set(1 if statistics.get("drift_detected") else 0)
    evaluation = _properties(record, "evaluation")
    if "accuracy" in evaluation:
        accuracy = gauge("agnews_model_accuracy", "Accuracy of the candidate and the baseline on the same rows",
                         ("model", "data"))
        for model, data, key in (("candidate", "test", "accuracy"), ("baseline", "test", "baseline_accuracy"),
                                 ("candidate", "newest_span", "newest_span_accuracy"),
                                 ("baseline", "newest_span", "newest_span_baseline_accuracy")):
            if evaluation.get(key) is not None:
                accuracy.labels(model=model, data=data).set(evaluation[key])
        blessing = _properties(record, "blessing")
        if blessing.get("anchor_accuracy") is not None:  # the gate's anchor: best recent served version
            accuracy.labels(model="anchor", data="test").set(blessing["anchor_accuracy"])
        if blessing.get("p_value") is not None:
            gauge("agnews_model_paired_p_value", "One-sided McNemar p-value that the candidate is worse than the "
                  "baseline on the same test rows").set(blessing["p_value"])
    examples = _properties(record, "examples")
    if "window" in examples:
        spans = gauge("agnews_retrain_spans", "Spans of the window by what ingest did with them", ("state",))
        for state in ("ingested", "reingested", "reused"):
            spans.labels(state=state).set(len(examples.get(f"spans_{state}", [])))
    version = _serving_version(serving_dir)
    if version is not None:
        gauge("agnews_serving_version", "The highest model version in the serving folder").set(version)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def _serving_version(serving_dir: Path | None) -> int | None:
    from library.layouts import serving_versions
    if serving_dir is None or not serving_dir.is_dir():
        return None
    versions = serving_versions(serving_dir)
    return max(versions) if versions else None
